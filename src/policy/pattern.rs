//! Topic and channel patterns: compiled once at load, matched by a small NFA walk. No I/O here.
//!
//! A pattern is NSQ name characters `[.a-zA-Z0-9_-]`, the wildcards `*` and `**`, the
//! placeholder `${identity}` (the caller's identity, matched literally), and optionally a
//! trailing `#ephemeral`. Names are `.`-separated segments, as in NATS, MQTT and RabbitMQ:
//! `*` matches any run of name characters within one segment (never a `.`), `**` any run
//! across segments. So `${identity}.*` gives `alice` the topic `alice.orders` but not
//! `alice.bob.orders`, which belongs to the namespace of identity `alice.bob`. Neither
//! wildcard matches `#`: an ephemeral name only matches a pattern ending in `#ephemeral`.

/// Suffix that marks an ephemeral topic or channel.
const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// The only placeholder a pattern may contain.
const IDENTITY_PLACEHOLDER: &str = "${identity}";

/// The character that separates the segments `*` stays within.
const SEPARATOR: u8 = b'.';

/// A compiled pattern.
#[derive(Clone, Debug)]
pub(crate) struct Pattern {
    /// The pattern before `#ephemeral`, in order. Never empty.
    atoms: Vec<Atom>,
    /// Whether the pattern ends in `#ephemeral`; a name matches only with the same suffix.
    ephemeral: bool,
    /// Whether `${identity}` appears, so an empty identity can be refused up front.
    uses_identity: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Atom {
    Literal(String),
    Identity,
    /// `*`: any run of name characters but `.`, possibly empty.
    Star,
    /// `**`: any run of name characters, possibly empty.
    Globstar,
}

/// One step of the expanded pattern the matcher walks: a byte or a wildcard.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Byte(u8),
    Star,
    Globstar,
}

// === impl Pattern ===

impl Pattern {
    /// Compiles `text`, or says (in one sentence) what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("a pattern may not be empty".to_owned());
        }
        let (stem, ephemeral) = split_ephemeral(text);
        if stem.is_empty() {
            return Err(format!(
                "pattern {text:?} needs a name before `#ephemeral` (use `**#ephemeral` for any)"
            ));
        }
        let mut atoms: Vec<Atom> = Vec::new();
        let mut uses_identity = false;
        let mut rest = stem;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix(IDENTITY_PLACEHOLDER) {
                uses_identity = true;
                atoms.push(Atom::Identity);
                rest = after;
                continue;
            }
            if c == '*' {
                let stars = rest.len() - rest.trim_start_matches('*').len();
                atoms.push(match stars {
                    1 => Atom::Star,
                    2 => Atom::Globstar,
                    _ => {
                        return Err(format!(
                            "pattern {text:?}: `*` is one segment and `**` any run of segments; \
                             three or more `*` in a row mean nothing more"
                        ))
                    }
                });
                rest = &rest[stars..];
                continue;
            }
            if !is_name_char(c) {
                return Err(bad_char(text, c));
            }
            match atoms.last_mut() {
                Some(Atom::Literal(literal)) => literal.push(c),
                _ => atoms.push(Atom::Literal(c.to_string())),
            }
            rest = &rest[c.len_utf8()..];
        }
        Ok(Pattern {
            atoms,
            ephemeral,
            uses_identity,
        })
    }

    /// Whether the topic or channel `name` matches, with `${identity}` standing for `identity`.
    ///
    /// Names nsqd would reject (characters outside `[.a-zA-Z0-9_-]` before the optional
    /// `#ephemeral`, or an empty stem) match no pattern, and a pattern that uses `${identity}`
    /// never matches for an empty identity. Cost is O(name length × pattern length): the
    /// walk keeps the set of pattern positions reachable so far, so no input backtracks.
    pub(crate) fn matches(&self, name: &str, identity: &str) -> bool {
        let (stem, ephemeral) = split_ephemeral(name);
        if ephemeral != self.ephemeral
            || stem.is_empty()
            || !stem.bytes().all(|b| is_name_char(char::from(b)))
            || (self.uses_identity && identity.is_empty())
        {
            return false;
        }
        if let [Atom::Literal(literal)] = self.atoms.as_slice() {
            return literal == stem;
        }
        let steps = self.steps(identity.as_bytes());
        let mut live = vec![false; steps.len() + 1];
        let mut next = live.clone();
        live[0] = true;
        close(&steps, &mut live);
        for &byte in stem.as_bytes() {
            next.fill(false);
            for (at, step) in steps.iter().enumerate() {
                if !live[at] {
                    continue;
                }
                match *step {
                    Step::Byte(b) if b == byte => next[at + 1] = true,
                    Step::Byte(_) => {}
                    Step::Star if byte == SEPARATOR => {}
                    Step::Star | Step::Globstar => next[at] = true,
                }
            }
            close(&steps, &mut next);
            std::mem::swap(&mut live, &mut next);
            if !live.contains(&true) {
                return false;
            }
        }
        live[steps.len()]
    }

    /// Whether this pattern matches every name of its kind (every non-ephemeral name, or
    /// every ephemeral one): it is `**` (or `**#ephemeral`). Decided from the pattern itself,
    /// never by trying names.
    pub(crate) fn covers_all(&self) -> bool {
        self.atoms == [Atom::Globstar]
    }

    /// Whether the pattern ends in `#ephemeral` (and so matches only ephemeral names).
    pub(crate) fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// Whether a single `*` appears: before `*` stayed within one segment it matched across
    /// `.` too, so such a pattern may now match fewer names than it once did.
    pub(crate) fn has_segment_star(&self) -> bool {
        self.atoms.contains(&Atom::Star)
    }

    /// The pattern as it matched before segments: every `*` crossed `.`.
    pub(crate) fn legacy(&self) -> Pattern {
        let atoms = self
            .atoms
            .iter()
            .map(|atom| match atom {
                Atom::Star => Atom::Globstar,
                other => other.clone(),
            })
            .collect();
        Pattern { atoms, ..*self }
    }

    /// The pattern as bytes and wildcards, with `${identity}` spelled out.
    fn steps(&self, identity: &[u8]) -> Vec<Step> {
        let mut steps = Vec::new();
        for atom in &self.atoms {
            match atom {
                Atom::Literal(literal) => steps.extend(literal.bytes().map(Step::Byte)),
                Atom::Identity => steps.extend(identity.iter().copied().map(Step::Byte)),
                Atom::Star => steps.push(Step::Star),
                Atom::Globstar => steps.push(Step::Globstar),
            }
        }
        steps
    }
}

// === helpers ===

/// Adds the positions reachable without reading: past any wildcard (they match empty runs).
/// One forward pass suffices, since skipping only ever moves forward.
fn close(steps: &[Step], live: &mut [bool]) {
    for (at, step) in steps.iter().enumerate() {
        if live[at] && matches!(step, Step::Star | Step::Globstar) {
            live[at + 1] = true;
        }
    }
}

/// Splits `name#ephemeral` into (`name`, true); anything else into (itself, false).
fn split_ephemeral(name: &str) -> (&str, bool) {
    match name.strip_suffix(EPHEMERAL_SUFFIX) {
        Some(stem) => (stem, true),
        None => (name, false),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn bad_char(text: &str, c: char) -> String {
    match c {
        '#' => format!("pattern {text:?}: `#` may only appear in a trailing `#ephemeral`"),
        '$' => format!("pattern {text:?}: the only placeholder is `${{identity}}`"),
        _ => format!(
            "pattern {text:?}: unexpected character {c:?}; a pattern uses `.a-zA-Z0-9_-`, \
             `*`, `**` and `${{identity}}`"
        ),
    }
}

mod nsqd;

#[cfg(test)]
mod tests;
