//! A pattern in the terms of nsqd's HTTP auth protocol: an anchored Go (RE2) regular
//! expression, and whether two patterns share a name (nsqd's grants can only allow, so a deny
//! that overlaps an allow must be decided before a grant is emitted). No I/O here.
//!
//! The regex only has to agree with [`Pattern::matches`] on names nsqd accepts
//! (`^[.a-zA-Z0-9_-]+(#ephemeral)?$`, checked by nsqd before it asks), but it stays exact
//! beyond them where that is free: `*` and `**` alone need one character, as an empty name
//! matches no pattern.

use super::{is_name_char, Atom, Pattern, Step, SEPARATOR};

/// Name characters within one segment, as a class both RE2 and the `regex` crate read alike.
const SEGMENT_CLASS: &str = r"[0-9A-Za-z_\-]";
/// Every name character.
const NAME_CLASS: &str = r"[.0-9A-Za-z_\-]";

// === impl Pattern ===

impl Pattern {
    /// The Go regular expression, anchored at both ends (nsqd's `MatchString` is not), that
    /// matches the names this pattern matches for `identity`. None when it matches no name
    /// for that identity (empty, or holding a character no name has).
    pub(crate) fn go_regex(&self, identity: &str) -> Option<String> {
        if !self.usable_with(identity) {
            return None;
        }
        // `*` or `**` alone would match the empty name, which no pattern matches.
        let repeat = match self.atoms.as_slice() {
            [Atom::Star] | [Atom::Globstar] => '+',
            _ => '*',
        };
        let mut out = String::from("^");
        for atom in &self.atoms {
            match atom {
                Atom::Literal(literal) => push_literal(&mut out, literal),
                Atom::Identity => push_literal(&mut out, identity),
                Atom::Star => {
                    out.push_str(SEGMENT_CLASS);
                    out.push(repeat);
                }
                Atom::Globstar => {
                    out.push_str(NAME_CLASS);
                    out.push(repeat);
                }
            }
        }
        if self.ephemeral {
            out.push_str(super::EPHEMERAL_SUFFIX);
        }
        out.push('$');
        Some(out)
    }

    /// Whether some name matches both `self` and `other` for `identity`. Exact: a walk over
    /// pairs of positions in both patterns (each wildcard may stay or move on), reading
    /// every name character, so no name is tried and nothing is guessed.
    pub(crate) fn overlaps(&self, other: &Pattern, identity: &str) -> bool {
        if self.ephemeral != other.ephemeral
            || !self.usable_with(identity)
            || !other.usable_with(identity)
        {
            return false;
        }
        let (left, right) = (
            self.steps(identity.as_bytes()),
            other.steps(identity.as_bytes()),
        );
        // (position in left, position in right, at least one character read).
        let mut seen = vec![false; (left.len() + 1) * (right.len() + 1) * 2];
        let index =
            |l: usize, r: usize, read: bool| (l * (right.len() + 1) + r) * 2 + usize::from(read);
        let mut todo = vec![(0, 0, false)];
        while let Some((l, r, read)) = todo.pop() {
            let Some(slot) = seen.get_mut(index(l, r, read)) else {
                continue;
            };
            if *slot {
                continue;
            }
            *slot = true;
            if l == left.len() && r == right.len() && read {
                return true;
            }
            // A wildcard may match nothing: move past it without reading.
            if left.get(l).copied().is_some_and(is_wildcard) {
                todo.push((l + 1, r, read));
            }
            if right.get(r).copied().is_some_and(is_wildcard) {
                todo.push((l, r + 1, read));
            }
            for byte in NAME_BYTES.iter().copied() {
                if let (Some(l2), Some(r2)) = (advance(&left, l, byte), advance(&right, r, byte)) {
                    todo.push((l2, r2, true));
                }
            }
        }
        false
    }

    /// Whether the pattern can match anything for `identity`: `${identity}` needs a
    /// non-empty identity made of name characters, since names hold nothing else.
    fn usable_with(&self, identity: &str) -> bool {
        !self.uses_identity || (!identity.is_empty() && identity.chars().all(is_name_char))
    }
}

// === helpers ===

/// Every byte a name (before `#ephemeral`) may hold.
const NAME_BYTES: &[u8] = b".-_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn is_wildcard(step: Step) -> bool {
    matches!(step, Step::Star | Step::Globstar)
}

/// Where reading `byte` at position `at` leads, if anywhere: past a matching byte, or
/// staying on a wildcard that takes it.
fn advance(steps: &[Step], at: usize, byte: u8) -> Option<usize> {
    match steps.get(at)? {
        Step::Byte(b) if *b == byte => Some(at + 1),
        Step::Star if byte != SEPARATOR => Some(at),
        Step::Globstar => Some(at),
        _ => None,
    }
}

/// Name characters as a regex: all stand for themselves but `.`.
fn push_literal(out: &mut String, literal: &str) {
    for c in literal.chars() {
        if c == '.' {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests;
