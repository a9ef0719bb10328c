#![allow(clippy::unwrap_used)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[tokio::test]
async fn a_reader_that_takes_nothing_is_cut_off() {
    let (near, _far) = tokio::io::duplex(16);
    let mut io = WriteDeadline::new(near, Duration::from_millis(200));
    let error = io.write_all(&[0u8; 64]).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn a_slow_reader_that_keeps_reading_is_served() {
    let (near, mut far) = tokio::io::duplex(16);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut chunk = [0u8; 8];
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match far.read(&mut chunk).await.unwrap() {
                0 => return got,
                n => got.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let mut io = WriteDeadline::new(near, Duration::from_secs(5));
    io.write_all(&[7u8; 64]).await.unwrap();
    io.shutdown().await.unwrap();
    drop(io);
    assert_eq!(reader.await.unwrap(), vec![7u8; 64]);
}
