//! The pattern -> Go regex translation checked against a real regex engine (the `regex`
//! crate, whose syntax and semantics agree with Go's RE2 for what is emitted), matched
//! unanchored as nsqd's `MatchString` does; and pattern overlap against brute force.

use proptest::prelude::*;
use regex::Regex;

use super::super::Pattern;

fn compiled(text: &str) -> Pattern {
    match Pattern::parse(text) {
        Ok(pattern) => pattern,
        Err(reason) => panic!("{text:?} does not compile: {reason}"),
    }
}

/// What nsqd does with a regex we send: compile it and search, unanchored.
fn nsqd_matches(regex: &str, name: &str) -> bool {
    match Regex::new(regex) {
        Ok(regex) => regex.is_match(name),
        Err(e) => panic!("{regex:?} does not compile: {e}"),
    }
}

/// Names nsqd accepts, short and varied: every segment/wildcard boundary case the patterns
/// below can hit.
fn names() -> Vec<String> {
    let stems = [
        "a",
        "b",
        "ab",
        "ba",
        "a.b",
        "b.a",
        "a.b.c",
        "orders",
        "orders.",
        "orders.new",
        "orders.eu.new",
        "xorders.new",
        "alice",
        "alice.x",
        "alice.bob.x",
        "me",
        "x.me",
        "x.y.me",
        "a-b",
        "a_b",
        "tail",
        "tail1",
        "tails.x",
        ".",
        "..",
        "a..b",
        "-",
        "_",
    ];
    stems
        .iter()
        .flat_map(|stem| [(*stem).to_owned(), format!("{stem}#ephemeral")])
        .collect()
}

#[test]
fn emitted_regexes_are_anchored_and_escaped() {
    for (pattern, identity, regex) in [
        ("orders", "", r"^orders$"),
        ("orders.*", "", r"^orders\.[0-9A-Za-z_\-]*$"),
        ("orders.**", "", r"^orders\.[.0-9A-Za-z_\-]*$"),
        ("*", "", r"^[0-9A-Za-z_\-]+$"),
        ("**", "", r"^[.0-9A-Za-z_\-]+$"),
        ("**#ephemeral", "", r"^[.0-9A-Za-z_\-]+#ephemeral$"),
        ("${identity}.*", "a.b", r"^a\.b\.[0-9A-Za-z_\-]*$"),
    ] {
        assert_eq!(compiled(pattern).go_regex(identity).as_deref(), Some(regex));
    }
}

#[test]
fn a_pattern_no_name_can_match_gives_no_regex() {
    assert_eq!(compiled("${identity}").go_regex(""), None);
    assert_eq!(compiled("${identity}.*").go_regex("m*"), None);
    assert_eq!(compiled("x.${identity}").go_regex("a b"), None);
    assert!(compiled("x").go_regex("a b").is_some(), "no identity used");
}

#[test]
fn regexes_agree_with_the_policy_matcher_on_every_name() {
    let patterns = [
        "a",
        "ab",
        "a.b",
        "*",
        "**",
        "*.*",
        "*.**",
        "a*",
        "a**",
        "*a",
        "**a",
        "a*b",
        "a**b",
        "orders.*",
        "orders.**",
        "*#ephemeral",
        "**#ephemeral",
        "tail*#ephemeral",
        "${identity}",
        "${identity}.*",
        "${identity}.**",
        "*.${identity}",
        "a-b",
        "a_b",
        ".",
    ];
    for identity in ["", "alice", "me", "a.b", "m*"] {
        for text in patterns {
            let pattern = compiled(text);
            let regex = pattern.go_regex(identity);
            for name in names() {
                let policy = pattern.matches(&name, identity);
                let nsqd = regex.as_deref().is_some_and(|r| nsqd_matches(r, &name));
                assert_eq!(
                    nsqd, policy,
                    "{text:?} as {regex:?} vs {name:?} (identity {identity:?})"
                );
            }
        }
    }
}

#[test]
fn overlapping_patterns() {
    for (left, right, identity, expected) in [
        ("orders.*", "orders.internal", "", true),
        ("orders.*", "orders.eu.x", "", false),
        ("orders.**", "orders.eu.x", "", true),
        ("*", "**", "", true),
        ("*", "a.*", "", false),
        ("a*", "*b", "", true),
        ("a*", "b*", "", false),
        ("**", "**#ephemeral", "", false),
        ("*#ephemeral", "tail*#ephemeral", "", true),
        ("${identity}.*", "alice.x", "alice", true),
        ("${identity}.*", "alice.x", "bob", false),
        ("${identity}", "*", "", false),
        ("${identity}", "*", "m*", false),
    ] {
        let (l, r) = (compiled(left), compiled(right));
        assert_eq!(l.overlaps(&r, identity), expected, "{left} vs {right}");
        assert_eq!(r.overlaps(&l, identity), expected, "{right} vs {left}");
    }
}

/// Every name over `a`, `b`, `.` of 1 to `max` characters.
fn small_names(max: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut layer = vec![String::new()];
    for _ in 0..max {
        layer = layer
            .iter()
            .flat_map(|n| ['a', 'b', '.'].map(|c| format!("{n}{c}")))
            .collect();
        all.extend(layer.iter().cloned());
    }
    all
}

proptest! {
    #[test]
    fn random_patterns_translate_exactly(
        pattern in "([ab.]|\\*|\\*\\*){1,6}(#ephemeral)?",
        name in "[ab.]{1,8}(#ephemeral)?",
    ) {
        prop_assume!(!pattern.contains("***"));
        let compiled = compiled(&pattern);
        let regex = compiled.go_regex("").unwrap_or_default();
        prop_assert_eq!(nsqd_matches(&regex, &name), compiled.matches(&name, ""), "{}", regex);
    }

    #[test]
    fn overlap_is_found_whenever_a_shared_name_exists(
        left in "([ab.]|\\*|\\*\\*){1,4}",
        right in "([ab.]|\\*|\\*\\*){1,4}",
    ) {
        prop_assume!(!left.contains("***") && !right.contains("***"));
        let (l, r) = (compiled(&left), compiled(&right));
        // A shortest shared name holds only literals of the two patterns (wildcards matching
        // nothing where they can): at most 3 + 3, as a pattern with 4 literals is one name.
        let shared = small_names(6).into_iter().any(|n| l.matches(&n, "") && r.matches(&n, ""));
        prop_assert_eq!(l.overlaps(&r, ""), shared);
    }
}
