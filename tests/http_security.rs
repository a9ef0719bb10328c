//! The HTTP fronts under attack, end to end against real nsqd and nsqlookupd: connection caps
//! and deadlines on every listener, name validation before anything is logged or forwarded,
//! `/stats` without other clients' details, cross-site requests, slow readers, PROXY headers,
//! producers that describe themselves falsely, and anonymous discovery.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod http_support;

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use http_support::{request, start, OPS_KEY, WRITER_KEY};

/// Everything the peer sends until it closes; `None` if it is still open after `limit`.
async fn read_to_close(tcp: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(limit, tcp.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Some(out),
        // A reset after the answer: still closed.
        Ok(Err(_)) => Some(out),
        Err(_) => None,
    }
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === 8.3: every listener counts against the caps and closes ===

#[tokio::test]
async fn plain_listener_counts_against_the_caps_and_closes_after_answering() {
    let s = start(&[], "\n[connections]\nmax_per_ip = 2\n");

    // One answer, `Connection: close`, and the connection really ends.
    let mut plain = TcpStream::connect(s.plain).await.unwrap();
    plain
        .write_all(b"GET /stats HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut plain, Duration::from_secs(30))
        .await
        .expect("the plain listener closes after its one answer");
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 403"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.contains("tls_required"), "{answer}");

    // Two idle connections fill this address's cap: a third is closed before any answer.
    let held = [
        TcpStream::connect(s.plain).await.unwrap(),
        TcpStream::connect(s.plain).await.unwrap(),
    ];
    let refused = eventually(Duration::from_secs(20), async || {
        let mut third = TcpStream::connect(s.plain).await.unwrap();
        let _ = third
            .write_all(b"GET /ping HTTP/1.1\r\nHost: g\r\n\r\n")
            .await;
        read_to_close(&mut third, Duration::from_secs(10))
            .await
            .is_some_and(|bytes| bytes.is_empty())
    })
    .await;
    assert!(
        refused,
        "a third plain connection from one address is refused"
    );
    // The caps are shared: the HTTPS front refuses this address too while the cap is full.
    let mut tls = TcpStream::connect(s.https).await.unwrap();
    assert_eq!(
        read_to_close(&mut tls, Duration::from_secs(10)).await,
        Some(Vec::new())
    );

    drop(held);
    let served = eventually(Duration::from_secs(20), async || {
        request(&s.pki, s.https, Method::GET, "/ping", None, "")
            .await
            .status
            == StatusCode::OK
    })
    .await;
    assert!(served, "the slots are given back");
}

#[tokio::test]
async fn plain_listener_has_the_head_deadline_of_the_fronts() {
    let s = start(&[], "\n[http]\nrequest_timeout_ms = 1000\n");
    let mut silent = TcpStream::connect(s.plain).await.unwrap();
    // A started head that never ends.
    let _ = silent.write_all(b"GET /stats HTTP/1.1\r\nHo").await;
    assert!(
        read_to_close(&mut silent, Duration::from_secs(30))
            .await
            .is_some(),
        "an unfinished head is cut off at request_timeout_ms"
    );
}

#[tokio::test]
async fn https_requests_count_against_the_identity_cap() {
    let s = start(&[], "\n[connections]\nmax_per_identity = 1\n");
    // A publish whose body never comes holds its connection (and its identity's slot).
    let mut held = http_support::tls_stream(&s.pki, s.https).await;
    let head = format!(
        "POST /pub?topic=orders HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {WRITER_KEY}\r\nContent-Length: 10\r\n\r\n"
    );
    held.write_all(head.as_bytes()).await.unwrap();
    held.flush().await.unwrap();

    let mut last = StatusCode::OK;
    let refused = eventually(Duration::from_secs(20), async || {
        let reply = request(&s.pki, s.https, Method::GET, "/stats", Some(WRITER_KEY), "").await;
        last = reply.status;
        reply.status == StatusCode::TOO_MANY_REQUESTS
            && reply.json()["message"] == "TOO_MANY_CONNECTIONS"
    })
    .await;
    assert!(
        refused,
        "a second request of the same identity is refused (last: {last})"
    );
    // Another identity is not affected.
    let reply = request(&s.pki, s.https, Method::GET, "/stats", Some(OPS_KEY), "").await;
    assert_eq!(reply.status, StatusCode::OK);
    drop(held);
}
