//! An MPUB's messages, kept as they came on the wire: each a 4-byte size and its body, in the
//! one buffer they arrived in, walked again when someone asks for them one by one.
//!
//! A list of slices, as before, cost every MPUB an allocation and every message two atomic
//! reference counts (taken, then dropped) while only a signed topic ever reads the messages
//! one by one: the rest of nsqgate asks how many there are and how many bytes they carry.

use bytes::{BufMut, Bytes, BytesMut};

/// The messages of one MPUB, in order.
#[derive(Clone, PartialEq, Eq)]
pub struct Messages {
    count: usize,
    /// `[size: u32 BE][body]` for each message. Built only by the decoder, which checked
    /// every size against the bytes that follow, or from bodies ([`FromIterator`]).
    sized: Bytes,
}

/// Iterates the bodies of [`Messages`], each sharing the MPUB's memory.
pub struct Iter<'a> {
    sized: &'a Bytes,
    at: usize,
}

// === impl Messages ===

impl Messages {
    /// `count` messages in `sized`, whose sizes the caller has checked (`parse::scan_mpub`).
    pub(super) fn checked(count: usize, sized: Bytes) -> Messages {
        Messages { count, sized }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bodies' bytes, size fields not counted.
    pub fn payload_bytes(&self) -> u64 {
        self.sized.len().saturating_sub(4 * self.count) as u64
    }

    /// The bytes after an MPUB's count: each message's size and body.
    pub fn sized(&self) -> &[u8] {
        &self.sized
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter {
            sized: &self.sized,
            at: 0,
        }
    }
}

impl FromIterator<Bytes> for Messages {
    fn from_iter<I: IntoIterator<Item = Bytes>>(bodies: I) -> Messages {
        let mut sized = BytesMut::new();
        let mut count = 0;
        for body in bodies {
            // A body over 4 GiB cannot be sized; nsqd's limits are far below.
            sized.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
            sized.put_slice(&body);
            count += 1;
        }
        Messages {
            count,
            sized: sized.freeze(),
        }
    }
}

impl From<Vec<Bytes>> for Messages {
    fn from(bodies: Vec<Bytes>) -> Messages {
        bodies.into_iter().collect()
    }
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Messages {
    type Item = Bytes;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

// === impl Iter ===

impl Iterator for Iter<'_> {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let size = self.sized.get(self.at..self.at + 4)?;
        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
        let start = self.at + 4;
        // Checked when the MPUB was decoded; a short one ends the walk rather than panicking.
        let end = start
            .checked_add(size)
            .filter(|&end| end <= self.sized.len())?;
        self.at = end;
        Some(self.sized.slice(start..end))
    }
}
