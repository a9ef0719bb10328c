//! Topic and channel patterns: compiled once at load, matched without allocating. No I/O here.
//!
//! A pattern is NSQ name characters `[.a-zA-Z0-9_-]`, `*` (any run of name characters,
//! possibly empty), the placeholder `${identity}` (the caller's identity, matched literally),
//! and optionally a trailing `#ephemeral`. `*` never matches `#`, so an ephemeral name only
//! matches a pattern that itself ends in `#ephemeral`.

/// Suffix that marks an ephemeral topic or channel.
const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// The only placeholder a pattern may contain.
const IDENTITY_PLACEHOLDER: &str = "${identity}";

/// A compiled pattern: the text between `*`s as segments of literal and identity pieces.
#[derive(Clone, Debug)]
pub(crate) struct Pattern {
    /// `a*b*c` is `[a, b, c]`; `*` alone is `["", ""]`. Never empty.
    segments: Vec<Segment>,
    /// Whether the pattern ends in `#ephemeral`; a name matches only with the same suffix.
    ephemeral: bool,
    /// Whether `${identity}` appears, so an empty identity can be refused up front.
    uses_identity: bool,
}

/// The pieces between two `*`s, matched back to back.
#[derive(Clone, Debug, Default)]
struct Segment {
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug)]
enum Piece {
    Literal(String),
    Identity,
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
                "pattern {text:?} needs a name before `#ephemeral` (use `*#ephemeral` for any)"
            ));
        }
        let mut segments = Vec::new();
        let mut segment = Segment::default();
        let mut uses_identity = false;
        let mut rest = stem;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix(IDENTITY_PLACEHOLDER) {
                uses_identity = true;
                segment.pieces.push(Piece::Identity);
                rest = after;
                continue;
            }
            if c == '*' {
                // `**` means the same as `*`; keeping one avoids an empty segment to search.
                let after_star = !segments.is_empty() && segment.pieces.is_empty();
                if !after_star {
                    segments.push(std::mem::take(&mut segment));
                }
            } else if is_name_char(c) {
                segment.push_char(c);
            } else {
                return Err(bad_char(text, c));
            }
            rest = &rest[c.len_utf8()..];
        }
        segments.push(segment);
        Ok(Pattern {
            segments,
            ephemeral,
            uses_identity,
        })
    }

    /// Whether the topic or channel `name` matches, with `${identity}` standing for `identity`.
    ///
    /// Names nsqd would reject (characters outside `[.a-zA-Z0-9_-]` before the optional
    /// `#ephemeral`, or an empty stem) match no pattern, and a pattern that uses `${identity}`
    /// never matches for an empty identity. Cost is O(name length × pattern length).
    pub(crate) fn matches(&self, name: &str, identity: &str) -> bool {
        let (stem, ephemeral) = split_ephemeral(name);
        if ephemeral != self.ephemeral
            || stem.is_empty()
            || !stem.bytes().all(|b| is_name_char(char::from(b)))
            || (self.uses_identity && identity.is_empty())
        {
            return false;
        }
        let text = stem.as_bytes();
        let id = identity.as_bytes();
        let (first, rest) = match self.segments.split_first() {
            Some(split) => split,
            None => return false,
        };
        let Some((last, middle)) = rest.split_last() else {
            return first.len(id) == text.len() && first.matches_at(text, 0, id);
        };
        let (first_len, last_len) = (first.len(id), last.len(id));
        if first_len + last_len > text.len() {
            return false;
        }
        let end = text.len() - last_len;
        if !first.matches_at(text, 0, id) || !last.matches_at(text, end, id) {
            return false;
        }
        // Leftmost placement of each middle segment is optimal: every `*` between them can
        // absorb any run of name characters, and the text holds nothing else.
        let mut pos = first_len;
        for segment in middle {
            match segment.find(&text[..end], pos, id) {
                Some(at) => pos = at + segment.len(id),
                None => return false,
            }
        }
        true
    }
}

// === impl Segment ===

impl Segment {
    fn push_char(&mut self, c: char) {
        match self.pieces.last_mut() {
            Some(Piece::Literal(literal)) => literal.push(c),
            _ => self.pieces.push(Piece::Literal(c.to_string())),
        }
    }

    fn len(&self, identity: &[u8]) -> usize {
        self.pieces
            .iter()
            .map(|piece| piece.bytes(identity).len())
            .sum()
    }

    /// Whether the segment occurs in `text` starting exactly at `at`.
    fn matches_at(&self, text: &[u8], at: usize, identity: &[u8]) -> bool {
        let mut pos = at;
        for piece in &self.pieces {
            let bytes = piece.bytes(identity);
            match text.get(pos..pos + bytes.len()) {
                Some(found) if found == bytes => pos += bytes.len(),
                _ => return false,
            }
        }
        true
    }

    /// The first position at or after `from` where the segment occurs in `text`.
    fn find(&self, text: &[u8], from: usize, identity: &[u8]) -> Option<usize> {
        let last_start = text.len().checked_sub(self.len(identity))?;
        (from..=last_start).find(|&at| self.matches_at(text, at, identity))
    }
}

impl Piece {
    fn bytes<'a>(&'a self, identity: &'a [u8]) -> &'a [u8] {
        match self {
            Piece::Literal(literal) => literal.as_bytes(),
            Piece::Identity => identity,
        }
    }
}

// === helpers ===

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
             `*` and `${{identity}}`"
        ),
    }
}
