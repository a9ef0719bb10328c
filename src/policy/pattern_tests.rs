//! Pattern tests: matching and rejections, plus proptests against a reference matcher.

use proptest::prelude::*;

use super::pattern::Pattern;

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
        ("*.*", "a.b.c", "", true),
        ("${identity}", "me", "me", true),
        ("${identity}", "me", "m*", false),
        ("x.${identity}.*", "x.m*.y", "m*", false),
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
    ] {
        assert!(Pattern::parse(bad).is_err(), "{bad:?} should not compile");
    }
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

/// Reference matcher: plain recursion over `*` (any run of name characters) and literals.
fn reference(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| reference(rest, &text[skip..])),
        Some((c, rest)) => text.first() == Some(c) && reference(rest, &text[1..]),
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
    fn star_patterns_agree_with_reference(pattern in "[ab.*]{1,8}", text in "[ab.]{1,10}") {
        prop_assert_eq!(
            compiled(&pattern).matches(&text, ""),
            reference(pattern.as_bytes(), text.as_bytes())
        );
    }
}
