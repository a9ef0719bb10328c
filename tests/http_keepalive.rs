//! The HTTPS fronts keep connections alive, and every request on one still passes the smuggling
//! screen: requests in turn and pipelined are each answered; a request whose head the screen
//! refuses gets 400 and the connection closes; a refused request ends the connection with a
//! clean TLS close, and its body, though it looks like a request, is never read as one; a
//! chunked request (whose end the screen cannot find) is the connection's last. A
//! kept-alive caller is audited as a TCP client is (one `auth` line per credential, one line
//! per allowed topic) while each request is still judged under the live policy. Real
//! nsqgate, real nsqd, requests written as raw bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod http_support;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use http_support::{start, tls_stream, OPS_KEY, WRITER_KEY};

/// One response: the status and the body (its Content-Length), or `None` at end of stream.
async fn read_response<S: AsyncRead + Unpin>(
    io: &mut S,
    held: &mut Vec<u8>,
) -> Option<(u16, String)> {
    let read_more = async |io: &mut S, held: &mut Vec<u8>| {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), io.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap_or(0);
        held.extend_from_slice(&chunk[..n]);
        n
    };
    let end = loop {
        if let Some(at) = held.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if read_more(io, held).await == 0 {
            assert!(held.is_empty(), "a partial response: {held:?}");
            return None;
        }
    };
    let head = String::from_utf8_lossy(&held[..end]).to_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse().unwrap());
    while held.len() < end + length {
        assert!(read_more(io, held).await > 0, "the body was cut short");
    }
    let body = String::from_utf8_lossy(&held[end..end + length]).into_owned();
    held.drain(..end + length);
    Some((status, body))
}

fn publish(topic: &str, key: &str, body: &str) -> String {
    format!(
        "POST /pub?topic={topic} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn requests_on_one_connection_are_answered_in_turn_and_each_is_screened() {
    let s = start(&[], "");
    let mut tls = tls_stream(&s.pki, s.https).await;
    let mut held = Vec::new();

    tls.write_all(publish("orders", WRITER_KEY, "one").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut tls, &mut held).await,
        Some((200, "OK".into()))
    );
    // Two more in one write (pipelined): both answered, in order, on the same connection.
    let two = publish("orders", WRITER_KEY, "two") + &publish("orders", WRITER_KEY, "three");
    tls.write_all(two.as_bytes()).await.unwrap();
    assert_eq!(
        read_response(&mut tls, &mut held).await,
        Some((200, "OK".into()))
    );
    assert_eq!(
        read_response(&mut tls, &mut held).await,
        Some((200, "OK".into()))
    );

    // A later head with both Content-Length and Transfer-Encoding: refused before parsing.
    let smuggling = format!(
        "POST /pub?topic=orders HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {WRITER_KEY}\r\n\
         Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    tls.write_all(smuggling.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut tls, &mut held).await.expect("a 400");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        read_response(&mut tls, &mut held).await,
        None,
        "the connection closes"
    );
    assert_eq!(s.nsqd.message_count("orders"), 3);
}

#[tokio::test]
async fn a_refused_requests_body_is_never_read_as_a_request() {
    let s = start(&[], "");
    let mut tls = tls_stream(&s.pki, s.https).await;
    let mut held = Vec::new();
    // A request with an unknown key whose body is itself a whole, authorised request.
    let inner = publish("smuggled", WRITER_KEY, "m");
    let outer = publish(
        "orders",
        "nsqk_not_a_known_key_000000000000000000000000000",
        &inner,
    );
    tls.write_all(outer.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut tls, &mut held).await.expect("a 401");
    assert_eq!(status, 401, "{body}");
    // A refusal ends the connection, with TLS's close_notify (a clean end of stream), so the
    // body is never read as a head.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest)).await;
    let closed = closed.expect("closed after the refusal");
    assert!(closed.is_ok(), "a clean TLS close: {closed:?}");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(!s.nsqd.topic_exists("smuggled"));
}

#[tokio::test]
async fn a_chunked_request_is_the_connections_last_and_nothing_behind_it_is_served() {
    let s = start(&[], "");
    let mut tls = tls_stream(&s.pki, s.https).await;
    // A chunked publish, and an authorised publish pipelined behind it. The chunked body's
    // end is only a parser's to find, so the screen cannot see the next head: the chunked
    // request must end the connection, and the one behind it is never served.
    let chunked = format!(
        "POST /pub?topic=orders HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {WRITER_KEY}\r\n\
         Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n"
    );
    let behind = publish("behind", WRITER_KEY, "unscreened");
    tls.write_all(format!("{chunked}{behind}").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_lowercase();
    assert!(
        closed.is_ok(),
        "the connection closes after the chunked request: {text}"
    );
    assert_eq!(text.matches("http/1.1 ").count(), 1, "{text}");
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert_eq!(s.nsqd.message_count("orders"), 1);
    assert!(!s.nsqd.topic_exists("behind"), "{}", s.nsqd.stats());
}

/// How many audit lines so far have `action` and `outcome` (and `topic`, if given).
fn audit_count(s: &http_support::Setup, action: &str, outcome: &str, topic: Option<&str>) -> usize {
    s.gate
        .audit_events()
        .iter()
        .filter(|e| e["action"] == action && e["outcome"] == outcome)
        .filter(|e| topic.is_none_or(|topic| e["topic"] == topic))
        .count()
}

#[tokio::test]
async fn a_kept_alive_caller_is_audited_once_per_credential_and_topic_and_judged_every_time() {
    let s = start(&[], "");
    let mut tls = tls_stream(&s.pki, s.https).await;
    let mut held = Vec::new();
    let mut ok = async |topic: &str, key: &str| {
        tls.write_all(publish(topic, key, "m").as_bytes())
            .await
            .unwrap();
        let reply = read_response(&mut tls, &mut held).await;
        assert_eq!(reply, Some((200, "OK".into())), "{topic} with {key}");
    };
    for _ in 0..3 {
        ok("orders", WRITER_KEY).await;
    }
    assert_eq!(s.nsqd.message_count("orders"), 3);
    assert_eq!(audit_count(&s, "auth", "success", None), 1);
    assert_eq!(audit_count(&s, "publish", "allow", Some("orders")), 1);
    // Another credential on the same connection is its own caller, with its own lines; the
    // first one's lines are written again once it comes back.
    ok("orders", OPS_KEY).await;
    ok("audits", OPS_KEY).await;
    ok("audits", OPS_KEY).await;
    ok("orders", WRITER_KEY).await;
    assert_eq!(audit_count(&s, "auth", "success", None), 3);
    assert_eq!(audit_count(&s, "publish", "allow", Some("orders")), 3);
    assert_eq!(audit_count(&s, "publish", "allow", Some("audits")), 1);
    assert_eq!(s.nsqd.message_count("orders"), 5);
    assert_eq!(s.nsqd.message_count("audits"), 2);

    // A reload that takes the writer's right: its next request on this connection is refused.
    let without_orders =
        http_support::policy().replace(r#"{ action = "publish", topics = ["orders"] },"#, "");
    assert_ne!(
        without_orders,
        http_support::policy(),
        "the writer's grant is in the policy"
    );
    s.pki
        .write_policy("http-policy", "http.toml", &without_orders);
    s.gate.wait_log(&["policy version in force", "version=2"]);
    tls.write_all(publish("orders", WRITER_KEY, "late").as_bytes())
        .await
        .unwrap();
    let (status, body) = read_response(&mut tls, &mut held).await.expect("a 403");
    assert_eq!(status, 403, "{body}");
    assert_eq!(s.nsqd.message_count("orders"), 5);
    assert_eq!(audit_count(&s, "publish", "deny", Some("orders")), 1);
}
