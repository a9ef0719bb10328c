use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[tokio::test]
async fn replays_prefix_then_reads_inner() {
    let (a, mut b) = tokio::io::duplex(64);
    b.write_all(b" world").await.unwrap();
    drop(b);
    let mut replay = Replay::new(Bytes::from_static(b"hello"), a);
    let mut out = String::new();
    replay.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "hello world");
}

#[tokio::test]
async fn a_replayed_prefix_lets_go_of_its_buffer() {
    let (a, b) = tokio::io::duplex(64);
    drop(b);
    let mut read = bytes::BytesMut::with_capacity(4096);
    read.extend_from_slice(b"hello");
    let prefix = read.split().freeze();
    drop(read);
    let witness = prefix.clone();
    let mut replay = Replay::new(prefix, a);
    let mut out = [0u8; 3];
    replay.read_exact(&mut out).await.unwrap();
    assert!(!witness.is_unique(), "the prefix is still being replayed");
    let mut rest = Vec::new();
    replay.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"lo");
    assert!(
        witness.is_unique(),
        "a replay that yielded its whole prefix still holds the buffer"
    );
}

#[tokio::test]
async fn an_empty_prefix_holds_no_buffer() {
    let (a, b) = tokio::io::duplex(64);
    drop(b);
    // What a reader that buffered nothing yet hands over: an empty view of its buffer.
    let mut read = bytes::BytesMut::with_capacity(4096);
    let prefix = read.split().freeze();
    drop(read);
    let witness = prefix.clone();
    let _replay = Replay::new(prefix, a);
    assert!(witness.is_unique(), "an empty prefix holds its buffer");
}
