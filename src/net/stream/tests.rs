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
