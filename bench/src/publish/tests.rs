use bytes::BytesMut;

use super::*;
use crate::compress::{Codec, Encoder};

fn load(body: Body, batch: usize) -> Load {
    Load {
        topic: "t".into(),
        connections: 1,
        depth: 1,
        size: 1024,
        batch,
        body,
    }
}

#[test]
fn text_runs_cycle_through_distinct_bodies() {
    let pubs = commands(&load(Body::Text, 1));
    assert_eq!(pubs.len(), TEXT_BODIES);
    let distinct: std::collections::HashSet<&[u8]> = pubs.iter().map(|c| &c[..]).collect();
    assert_eq!(distinct.len(), TEXT_BODIES);
    assert_eq!(commands(&load(Body::Repeated, 1)).len(), 1);
    let mpubs = commands(&load(Body::Text, 100));
    assert_eq!(mpubs.len(), 2);
    assert_ne!(mpubs[0], mpubs[1]);
}

/// What a compressed run measures depends on the bodies: a cycle of them must compress like
/// real JSON does (to a fifth or more), not to almost nothing as repeated copies would.
#[test]
fn a_cycle_of_text_bodies_compresses_like_json_not_like_copies() {
    let mut cycle = BytesMut::new();
    for command in commands(&load(Body::Text, 1)) {
        cycle.extend_from_slice(&command);
    }
    for codec in [Codec::Snappy, Codec::Deflate] {
        let mut wire = BytesMut::new();
        let mut encoder = Encoder::new(codec, 6).unwrap();
        encoder.encode(&cycle, &mut wire).unwrap();
        let ratio = wire.len() as f64 / cycle.len() as f64;
        assert!((0.2..0.8).contains(&ratio), "{codec:?}: {ratio:.2}");
    }
}
