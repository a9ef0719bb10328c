//! Pattern tests: matching and rejections, plus proptests against a reference matcher.

use proptest::prelude::*;

use super::Pattern;

fn compiled(text: &str) -> Pattern {
    match Pattern::parse(text) {
        Ok(pattern) => pattern,
        Err(reason) => panic!("{text:?} does not compile: {reason}"),
    }
}

#[test]
fn pattern_matching() {
    let cases: &[(&str, &str, &str, bool)] = &[
        ("*", "a", "", true),
        ("*", "", "", false),
        ("*", "a#ephemeral", "", false),
        ("*#ephemeral", "a#ephemeral", "", true),
        ("*#ephemeral", "a", "", false),
        ("a*b*c", "abc", "", true),
        ("a*b*c", "a-x-b-y-c", "", true),
        ("a*b*c", "acb", "", false),
        ("a**b", "ab", "", true),
        ("*.*", "a.b.c", "", false),
        ("*.*", "a.b", "", true),
        ("*.**", "a.b.c", "", true),
        ("**", "a.b.c", "", true),
        ("**", "a.b#ephemeral", "", false),
        ("**#ephemeral", "a.b#ephemeral", "", true),
        ("*", "a.b", "", false),
        ("a*", "a.b", "", false),
        ("a*c", "abc", "", true),
        ("a*c", "a.c", "", false),
        ("a**c", "a.b.c", "", true),
        ("orders.*", "orders.", "", true),
        ("orders.*", "orders", "", false),
        ("${identity}.*", "alice.orders", "alice", true),
        ("${identity}.*", "alice.bob.orders", "alice", false),
        ("${identity}.*", "alice.bob.orders", "alice.bob", true),
        ("${identity}.**", "alice.bob.orders", "alice", true),
        ("*.${identity}", "x.me", "me", true),
        ("*.${identity}", "x.y.me", "me", false),
        ("${identity}", "me", "me", true),
        ("${identity}", "me", "m*", false),
        ("x.${identity}.*", "x.m*.y", "m*", false),
        ("x.${identity}.*", "x.m.y", "m*", false),
        ("x.${identity}.*", "x.me.y", "me", true),
        ("x.${identity}.*", "x.mee.y", "me", false),
        ("${identity}*${identity}", "abab", "ab", true),
        ("${identity}*${identity}", "aba", "ab", false),
        ("${identity}", "", "", false),
        ("a", "a#ephemeral", "", false),
        ("tail*#ephemeral", "tail#ephemeral", "", true),
    ];
    for &(pattern, name, identity, expected) in cases {
        let got = compiled(pattern).matches(name, identity);
        assert_eq!(
            got, expected,
            "{pattern:?} vs {name:?} (identity {identity:?})"
        );
    }
}

#[test]
fn pattern_rejections() {
    for bad in [
        "",
        "#ephemeral",
        "a#b",
        "a$b",
        "${ident}",
        "a b",
        "é",
        "a#ephemeral#ephemeral",
        "{identity}x?",
        "***",
        "a***b",
        "**#ephemeral#ephemeral",
    ] {
        assert!(Pattern::parse(bad).is_err(), "{bad:?} should not compile");
    }
}

#[test]
fn only_a_lone_globstar_covers_every_name() {
    for (text, covers, ephemeral) in [
        ("**", true, false),
        ("**#ephemeral", true, true),
        ("*", false, false),
        ("*_*", false, false),
        ("*0*", false, false),
        ("**.**", false, false),
        ("a**", false, false),
        ("${identity}**", false, false),
    ] {
        let pattern = compiled(text);
        assert_eq!(pattern.covers_all(), covers, "{text}");
        assert_eq!(pattern.is_ephemeral(), ephemeral, "{text}");
    }
}

#[test]
fn legacy_stars_cross_segments_and_are_flagged() {
    let pattern = compiled("${identity}.*");
    assert!(pattern.has_segment_star());
    assert!(!pattern.matches("alice.bob.orders", "alice"));
    assert!(pattern.legacy().matches("alice.bob.orders", "alice"));
    assert!(!compiled("a**").has_segment_star());
}

#[test]
fn many_stars_stay_fast() {
    let pattern = compiled(&format!("{}b", "a*".repeat(30)));
    let text = "a".repeat(64);
    let started = std::time::Instant::now();
    for _ in 0..100 {
        assert!(!pattern.matches(&text, ""));
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

/// Reference matcher: plain recursion over `**` (any run), `*` (any run without `.`) and
/// literals.
fn reference(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|skip| reference(rest, &text[skip..])),
        [b'*', rest @ ..] => (0..=text.len())
            .take_while(|&skip| skip == 0 || text[skip - 1] != b'.')
            .any(|skip| reference(rest, &text[skip..])),
        [c, rest @ ..] => text.first() == Some(c) && reference(rest, &text[1..]),
    }
}

proptest! {
    #[test]
    fn literal_pattern_matches_exactly_itself(
        pattern in "[.a-zA-Z0-9_-]{1,40}(#ephemeral)?",
        other in "[.a-zA-Z0-9_-]{1,40}(#ephemeral)?",
    ) {
        let compiled = compiled(&pattern);
        prop_assert!(compiled.matches(&pattern, "anyone"));
        prop_assert_eq!(compiled.matches(&other, "anyone"), other == pattern);
    }

    #[test]
    fn star_patterns_agree_with_reference(pattern in "([ab.]|\\*|\\*\\*){1,8}", text in "[ab.]{1,10}") {
        prop_assume!(!pattern.contains("***"));
        prop_assert_eq!(
            compiled(&pattern).matches(&text, ""),
            reference(pattern.as_bytes(), text.as_bytes())
        );
    }
}
