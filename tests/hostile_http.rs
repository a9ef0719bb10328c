//! Request smuggling and slow heads against the HTTP front (issue 13), written as raw bytes
//! inside TLS: CL+TE, duplicate CL and TE, obs-fold, bare LF, whitespace before a colon, path
//! tricks and encoded slashes, oversized heads, and a header trickle. Every request carries a
//! key allowed to publish to `orders`, so a request that slipped through would publish; each
//! gets a 4xx with a JSON body or a close, and nsqd never sees `orders`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod http_support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use http_support::{start, tls_stream, WRITER_KEY};

/// The head deadline of the front in these tests (`[http] request_timeout_ms`).
const HEAD_LIMIT: Duration = Duration::from_millis(1500);
/// How long any one answer may take on a loaded machine.
const ANSWER_LIMIT: Duration = Duration::from_secs(15);

/// What a client sees.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A status with a JSON body whose `message` is this.
    Json(u16, String),
    /// The close with no answer.
    Close,
}

/// A request to publish to `orders`, with `headers` (CRLF-terminated lines) and `body`.
fn publish(path: &str, headers: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {WRITER_KEY}\r\n{headers}\r\n{body}"
    )
}

/// The answer to `bytes`, read until nsqgate closes.
async fn answer(s: &http_support::Setup, bytes: &[u8]) -> Result<Seen, String> {
    let mut tls = tls_stream(&s.pki, s.https).await;
    let _ = tls.write_all(bytes).await;
    let mut out = Vec::new();
    match tokio::time::timeout(ANSWER_LIMIT, tls.read_to_end(&mut out)).await {
        Err(_) => return Err("no answer and no close".into()),
        Ok(_) if out.is_empty() => return Ok(Seen::Close),
        Ok(_) => {}
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("not HTTP: {text}"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("no status: {head}"))?;
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|_| format!("{status} without a JSON body: {text}"))?;
    let message = json["message"].as_str().unwrap_or_default().to_owned();
    Ok(Seen::Json(status, message))
}

fn json(status: u16, message: &str) -> Seen {
    Seen::Json(status, message.into())
}

#[tokio::test]
async fn smuggling_shapes_and_path_tricks_are_refused_before_anything_is_published() {
    let s = start(
        &[],
        &format!(
            "\n[http]\nrequest_timeout_ms = {}\n",
            HEAD_LIMIT.as_millis()
        ),
    );
    let invalid = || json(400, "INVALID_REQUEST");
    let long_header = format!("X-Padding: {}\r\n", "p".repeat(70 * 1024));
    let many_headers: String = (0..150).map(|n| format!("X-Many-{n}: v\r\n")).collect();
    let cases: Vec<(&str, String, Seen)> = vec![
        (
            "CL then TE",
            publish("/pub?topic=orders", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            invalid(),
        ),
        (
            "TE then CL",
            publish("/pub?topic=orders", "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "0\r\n\r\n"),
            invalid(),
        ),
        (
            "duplicate CL, equal",
            publish("/pub?topic=orders", "Content-Length: 4\r\nContent-Length: 4\r\n", "smug"),
            invalid(),
        ),
        (
            "duplicate CL, different",
            publish("/pub?topic=orders", "Content-Length: 4\r\nContent-Length: 40\r\n", "smug"),
            invalid(),
        ),
        (
            "CL as a list",
            publish("/pub?topic=orders", "Content-Length: 4, 4\r\n", "smug"),
            invalid(),
        ),
        (
            "duplicate TE",
            publish("/pub?topic=orders", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "4\r\nsmug\r\n0\r\n\r\n"),
            invalid(),
        ),
        (
            "obs-fold of TE",
            publish("/pub?topic=orders", "Content-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n", "smug"),
            invalid(),
        ),
        (
            "obs-fold of another header",
            publish("/pub?topic=orders", "Content-Length: 4\r\nX-Note: a\r\n\tb\r\n", "smug"),
            invalid(),
        ),
        (
            "space before a colon",
            publish("/pub?topic=orders", "Content-Length : 4\r\n", "smug"),
            invalid(),
        ),
        (
            "tab before a colon",
            publish("/pub?topic=orders", "Transfer-Encoding\t: chunked\r\nContent-Length: 4\r\n", "smug"),
            invalid(),
        ),
        (
            "a bare LF ending one header",
            publish("/pub?topic=orders", "X-Note: a\nContent-Length: 4\r\n", "smug"),
            invalid(),
        ),
        (
            "bare LFs only",
            format!("POST /pub?topic=orders HTTP/1.1\nHost: gate\nAuthorization: Bearer {WRITER_KEY}\nContent-Length: 4\n\nsmug"),
            invalid(),
        ),
        (
            "a head over 64 KiB",
            publish("/pub?topic=orders", &format!("{long_header}Content-Length: 4\r\n"), "smug"),
            invalid(),
        ),
        (
            "150 headers",
            publish("/pub?topic=orders", &format!("{many_headers}Content-Length: 4\r\n"), "smug"),
            invalid(),
        ),
        (
            "an encoded slash",
            publish("/pub%2F..?topic=orders", "Content-Length: 4\r\n", "smug"),
            json(404, "NOT_FOUND"),
        ),
        (
            "a double slash",
            publish("//pub?topic=orders", "Content-Length: 4\r\n", "smug"),
            json(404, "NOT_FOUND"),
        ),
        (
            "a dot segment",
            publish("/./pub?topic=orders", "Content-Length: 4\r\n", "smug"),
            json(404, "NOT_FOUND"),
        ),
        (
            "a dot-dot segment",
            publish("/stats/../pub?topic=orders", "Content-Length: 4\r\n", "smug"),
            json(404, "NOT_FOUND"),
        ),
        (
            "an encoded path",
            publish("/%70ub?topic=orders", "Content-Length: 4\r\n", "smug"),
            json(404, "NOT_FOUND"),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, request, expected) in &cases {
        match answer(&s, request.as_bytes()).await {
            Ok(seen) if seen == *expected => {}
            Ok(seen) => wrong.push(format!("{name}: expected {expected:?}, got {seen:?}")),
            Err(problem) => wrong.push(format!("{name}: {problem}")),
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    assert!(!s.nsqd.topic_exists("orders"), "{}", s.nsqd.stats());

    // An absolute-form target (which HTTP/1.1 servers must accept, nsqd's Go server too) is
    // read for its path only: the publish goes to the front's own nsqd, never to the host
    // the target names.
    let absolute = publish(
        "http://elsewhere.example/pub?topic=orders",
        "Content-Length: 4\r\n",
        "abso",
    );
    let mut tls = tls_stream(&s.pki, s.https).await;
    tls.write_all(absolute.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(ANSWER_LIMIT, tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(s.nsqd.message_count("orders"), 1);
}

#[tokio::test]
async fn a_request_behind_the_first_on_one_connection_is_screened_like_the_first() {
    let s = start(&[], "");
    // Kept alive, but every head is screened: a smuggling-shaped publish pipelined behind a
    // ping is refused with 400 before anything parses it, and the connection closes.
    let ping = "GET /ping HTTP/1.1\r\nHost: gate\r\n\r\n";
    let behind = publish(
        "/pub?topic=orders",
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "smug",
    );
    let mut tls = tls_stream(&s.pki, s.https).await;
    tls.write_all(format!("{ping}{behind}").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(ANSWER_LIMIT, tls.read_to_end(&mut out))
        .await
        .expect("closed after the refusal")
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("HTTP/1.1 400"), "{text}");
    assert!(!s.nsqd.topic_exists("orders"));
}

#[tokio::test]
async fn a_header_trickle_is_cut_off_at_the_head_deadline() {
    let s = start(
        &[],
        &format!(
            "\n[http]\nrequest_timeout_ms = {}\n",
            HEAD_LIMIT.as_millis()
        ),
    );
    let request = publish("/pub?topic=orders", "Content-Length: 4\r\n", "smug");
    let mut tls = tls_stream(&s.pki, s.https).await;
    let started = Instant::now();
    // A byte every 100 ms: each one arrives well within any per-read timeout, and the whole
    // head would take far longer than the head deadline.
    let mut closed_after = None;
    for byte in request.as_bytes() {
        if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), tls.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => panic!("an answer to an unfinished head"),
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("the whole trickled head was read");
    println!("header trickle closed after {closed_after:?} (head deadline {HEAD_LIMIT:?})");
    // The close is the head deadline's (the bytes kept coming every 100 ms); half of it as
    // the bound, since the gate's clock starts when its side of the handshake ends.
    assert!(
        closed_after >= HEAD_LIMIT / 2,
        "closed before the deadline: {closed_after:?}"
    );
    assert!(!s.nsqd.topic_exists("orders"));
}
