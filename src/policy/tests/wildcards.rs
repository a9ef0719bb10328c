//! `*` stays within one `.` segment: flagged where a file may have meant the old meaning,
//! and the old meaning still available to `policy explain`.

use super::{load, subject};
use crate::policy::Action::Publish;

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
