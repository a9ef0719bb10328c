#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::*;

/// Everything `one` yields until its end of stream.
async fn read_all<T: tokio::io::AsyncRead + Unpin>(one: &mut Replay<T>) -> Vec<u8> {
    let mut out = Vec::new();
    one.read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn yields_the_head_and_the_declared_body_and_keeps_the_rest() {
    let head = Bytes::from_static(b"POST /pub HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
    let head_len = 41;
    let inner: &[u8] = b"cdeGET /next HTTP/1.1\r\n\r\n";
    let (mut one, beyond) = one_request(head, inner, Some(head_len + 5));
    assert!(beyond.is_empty());
    let got = read_all(&mut one).await;
    assert_eq!(got, b"POST /pub HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde");
    let rest = finished(one).expect("the whole request was taken");
    assert_eq!(rest, b"GET /next HTTP/1.1\r\n\r\n");
}

#[tokio::test]
async fn what_was_read_beyond_the_request_is_handed_back() {
    let read = Bytes::from_static(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    let (mut one, beyond) = one_request(read, &b""[..], Some(19));
    assert_eq!(read_all(&mut one).await, b"GET /a HTTP/1.1\r\n\r\n");
    assert_eq!(beyond, Bytes::from_static(b"GET /b HTTP/1.1\r\n\r\n"));
    assert!(finished(one).is_ok());
}

#[tokio::test]
async fn a_body_left_unread_does_not_count_as_finished() {
    let head = Bytes::from_static(b"POST /pub HTTP/1.1\r\nContent-Length: 4\r\n\r\n");
    let (mut one, _) = one_request(head, &b"body"[..], Some(41 + 4));
    let mut first = [0u8; 10];
    one.read_exact(&mut first).await.unwrap();
    assert!(finished(one).is_err());
}

#[tokio::test]
async fn an_unknown_length_reads_to_the_end_and_never_finishes_cleanly() {
    let head = Bytes::from_static(b"POST /pub HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    let (mut one, beyond) = one_request(head, &b"0\r\n\r\nmore"[..], None);
    assert!(beyond.is_empty());
    let got = read_all(&mut one).await;
    assert!(got.ends_with(b"0\r\n\r\nmore"));
    assert!(finished(one).is_err());
}
