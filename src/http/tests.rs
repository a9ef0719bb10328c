//! Unit tests of the sans-io pieces: head screening, queries, credentials, publish bodies,
//! routing, lookupd rewriting and /stats filtering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ::http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::json;

use super::access::Access;
use super::nsqd::{route, NsqdEndpoint, PublishPath};
use super::publish::Kind;
use super::request::{self, Credential, HeadError, Query};
use super::{rewrite, stats};
use crate::config::http::NodeMapping;
use crate::nsq::Limits;
use crate::policy::{Policy, Subject};

fn head(lines: &str) -> Vec<u8> {
    format!("POST /pub?topic=t HTTP/1.1\r\n{lines}\r\n").into_bytes()
}

#[test]
fn head_screen_refuses_ambiguous_framing() {
    assert_eq!(
        request::screen_head(&head("Host: a\r\nContent-Length: 3\r\n")).map(|f| f.body),
        Ok(Some(3))
    );
    assert_eq!(
        request::screen_head(&head("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n")),
        Err(HeadError::LengthAndChunked)
    );
    assert_eq!(
        request::screen_head(&head("transfer-encoding: chunked\r\ncontent-LENGTH: 3\r\n")),
        Err(HeadError::LengthAndChunked)
    );
    assert_eq!(
        request::screen_head(&head("Content-Length: 3\r\nContent-Length: 3\r\n")),
        Err(HeadError::SeveralLengths)
    );
    assert_eq!(
        request::screen_head(&head("Content-Length: 3, 3\r\n")),
        Err(HeadError::SeveralLengths)
    );
    assert_eq!(
        request::screen_head(&head("Content-Length : 3\r\n")),
        Err(HeadError::Malformed)
    );
    assert_eq!(
        request::screen_head(&head("X-A: 1\r\n folded\r\n")),
        Err(HeadError::Malformed)
    );
    assert_eq!(request::head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
    assert_eq!(request::head_end(b"GET / HTTP/1.1\r\n"), None);
}

#[test]
fn head_screen_refuses_more_headers_than_hyper_parses() {
    let lines = |count: usize| -> String { (0..count).map(|n| format!("X-{n}: v\r\n")).collect() };
    assert_eq!(
        request::screen_head(&head(&lines(request::MAX_HEADERS))).map(|f| f.body),
        Ok(Some(0))
    );
    assert_eq!(
        request::screen_head(&head(&lines(request::MAX_HEADERS + 1))),
        Err(HeadError::TooManyHeaders)
    );
}

#[test]
fn head_screen_refuses_bare_line_feeds() {
    assert_eq!(
        request::screen_head(&head("X-A: 1\nContent-Length: 3\r\n")),
        Err(HeadError::BareLineFeed)
    );
    assert_eq!(
        request::screen_head(b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
        Err(HeadError::BareLineFeed)
    );
    // A head of bare LFs ends at its empty line, so it is screened at once.
    let bare = b"GET / HTTP/1.1\nHost: a\n\nrest";
    assert_eq!(request::head_end(bare), Some(24));
    assert_eq!(
        request::screen_head(&bare[..24]),
        Err(HeadError::BareLineFeed)
    );
    assert_eq!(
        request::head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Some(27)
    );
}

#[test]
fn query_decodes_and_reencodes_what_was_authorized() {
    let query = Query::parse(Some("topic=a%2Eb&topic=evil&defer=10&x=%zz+y"));
    assert_eq!(query.get("topic"), Some("a.b"));
    assert_eq!(query.get("x"), Some("%zz y"));
    assert_eq!(
        query.only(&["topic", "defer"]).with_path("/pub"),
        "/pub?topic=a.b&topic=evil&defer=10"
    );
    // Bytes that are not UTF-8 become U+FFFD (nsqd then refuses such a name as invalid).
    let query = Query::parse(Some("topic=a%FFb"));
    assert_eq!(query.get("topic"), Some("a\u{FFFD}b"));
    let mut query = Query::parse(None);
    assert_eq!(query.with_path("/stats"), "/stats");
    query.set("format", "json");
    assert_eq!(query.with_path("/stats"), "/stats?format=json");
}

#[test]
fn credentials_come_from_bearer_then_x_nsq_auth() {
    let mut headers = HeaderMap::new();
    assert_eq!(request::credential(&headers), Credential::None);
    headers.insert("x-nsq-auth", HeaderValue::from_static("nsqk_b"));
    assert_eq!(request::credential(&headers), Credential::Secret(b"nsqk_b"));
    headers.insert("authorization", HeaderValue::from_static("bearer nsqk_a"));
    assert_eq!(request::credential(&headers), Credential::Secret(b"nsqk_a"));
    headers.insert(
        "authorization",
        HeaderValue::from_static("Basic Zm9vOmJhcg=="),
    );
    assert_eq!(request::credential(&headers), Credential::Unusable);
}

#[test]
fn publish_bodies_follow_nsqd_rules() {
    let limits = Limits {
        max_msg_size: 4,
        max_body_size: 20,
        ..Limits::default()
    };
    assert_eq!(Kind::Pub.limit(&limits), 4);
    assert_eq!(Kind::Pub.check(b"", &limits).unwrap_err().code, "MSG_EMPTY");
    assert_eq!(Kind::mpub(Some("0")), Kind::MpubText);
    assert_eq!(Kind::mpub(Some("yes")), Kind::MpubBinary);
    assert!(Kind::MpubText.check(b"abcd\n\nab", &limits).is_ok());
    let refusal = Kind::MpubText.check(b"abcde", &limits).unwrap_err();
    assert_eq!(
        (refusal.status, refusal.code),
        (StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG")
    );
    let good = [&1u32.to_be_bytes()[..], &2u32.to_be_bytes(), b"ok"].concat();
    assert!(Kind::MpubBinary.check(&good, &limits).is_ok());
    let short = [&1u32.to_be_bytes()[..], &3u32.to_be_bytes(), b"ok"].concat();
    assert_eq!(
        Kind::MpubBinary.check(&short, &limits).unwrap_err().code,
        "BAD_MESSAGE"
    );
    let none = 0u32.to_be_bytes();
    assert_eq!(
        Kind::MpubBinary.check(&none, &limits).unwrap_err().code,
        "BAD_BODY"
    );
}

#[test]
fn routes_follow_nsqds_table() {
    assert_eq!(
        route(&Method::POST, "/pub").unwrap(),
        NsqdEndpoint::Publish(PublishPath::Pub)
    );
    assert_eq!(
        route(&Method::POST, "/channel/pause").unwrap(),
        NsqdEndpoint::Channel
    );
    assert_eq!(
        route(&Method::PUT, "/config/log_level").unwrap(),
        NsqdEndpoint::Operator
    );
    assert_eq!(
        route(&Method::GET, "/debug/pprof/heap").unwrap(),
        NsqdEndpoint::Operator
    );
    let status = |m: Method, p: &str| route(&m, p).unwrap_err().into_response().status();
    assert_eq!(status(Method::GET, "/pub"), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(status(Method::GET, "/topic/explode"), StatusCode::NOT_FOUND);
    assert_eq!(status(Method::GET, "/config/a/b"), StatusCode::NOT_FOUND);
    assert_eq!(
        status(Method::GET, "/debug/pprof/nope"),
        StatusCode::NOT_FOUND
    );
}

fn policy() -> Policy {
    let text = r#"
[roles.reader]
allow = [
  { action = "subscribe", topics = ["orders"], channels = ["billing"] },
  { action = "publish", topics = ["events"] },
]
[roles.ops]
allow = [{ action = "admin", topics = ["**", "**#ephemeral"] }]
[identities]
reader = ["reader"]
ops = ["ops"]
"#;
    Policy::from_sources(&[("p.toml".into(), text.to_owned())]).unwrap()
}

fn access<'a>(policy: &'a Policy, identity: &'a str) -> Access<'a> {
    Access {
        policy,
        subject: Subject {
            identity,
            claimed_roles: &[],
        },
    }
}

#[test]
fn visibility_and_global_rules() {
    let policy = policy();
    let reader = access(&policy, "reader");
    assert!(reader.topic_visible("events", []));
    // Allowed on one channel only, it still discovers the topic before that channel exists.
    assert!(reader.topic_visible("orders", []));
    assert!(!reader.topic_visible("payments", []));
    assert!(reader.topic_visible("orders", ["other", "billing"]));
    assert!(!reader.channel_visible("orders", "other"));
    assert!(!reader.global_admin() && !reader.global_read());
    let ops = access(&policy, "ops");
    assert!(ops.global_admin() && ops.global_read());
}

fn node(address: &str, tcp: u16, gate: &str) -> NodeMapping {
    NodeMapping {
        broadcast_address: address.into(),
        tcp_port: tcp,
        http_port: tcp + 1,
        gate_address: gate.into(),
        gate_tcp_port: 4150,
        gate_http_port: 4152,
        registered_from: Vec::new(),
    }
}

#[test]
fn producers_are_mapped_or_dropped() {
    let nodes = [
        node("10.0.0.1", 4150, "gate-1"),
        node("10.0.0.2", 4150, "gate-2"),
    ];
    let mut reply = json!({"channels": [], "producers": [
        {"remote_address": "10.0.0.1:5555", "hostname": "n1", "broadcast_address": "10.0.0.1",
         "tcp_port": 4150, "http_port": 4151, "version": "1.3.0"},
        {"remote_address": "10.9.9.9:5555", "hostname": "evil", "broadcast_address": "10.0.0.1",
         "tcp_port": 9999, "http_port": 4151, "version": "1.3.0"},
        {"remote_address": "10.9.9.9:6666", "hostname": "liar", "broadcast_address": "10.0.0.2",
         "tcp_port": 4150, "http_port": 4151, "version": "1.3.0"},
    ]});
    let expected = [
        vec!["10.0.0.1".parse().unwrap()],
        vec!["10.0.0.2".parse().unwrap()],
    ];
    let dropped = rewrite::producers(&mut reply, &nodes, &expected);
    assert_eq!(dropped.len(), 2);
    assert_eq!(dropped[0].tcp_port, 9999);
    assert_eq!(
        dropped[1].why,
        "registered from an address that is not the node's"
    );
    assert_eq!(
        reply["producers"],
        json!([{"remote_address": "gate-1:4150", "hostname": "gate-1",
                "broadcast_address": "gate-1", "tcp_port": 4150, "http_port": 4152,
                "version": "1.3.0"}])
    );
    assert_eq!(
        rewrite::tombstone_node("gate-2:4152", &nodes),
        "10.0.0.2:4151"
    );
    assert_eq!(rewrite::tombstone_node("other:1", &nodes), "other:1");
}

#[test]
fn nodes_keep_topics_and_tombstones_in_step() {
    let policy = policy();
    let mut reply = json!({"producers": [
        {"broadcast_address": "a", "topics": ["orders", "events", "x"], "tombstones": [false, true, false]},
    ]});
    rewrite::node_topics(&mut reply, &access(&policy, "reader"));
    assert_eq!(reply["producers"][0]["topics"], json!(["orders", "events"]));
    assert_eq!(reply["producers"][0]["tombstones"], json!([false, true]));
}

#[test]
fn stats_are_filtered_and_rendered() {
    let policy = policy();
    let mut reply = json!({
        "version": "1.3.0", "health": "OK", "start_time": 0,
        "topics": [
            {"topic_name": "orders", "depth": 1, "channels": [
                {"channel_name": "billing", "depth": 1, "clients": [
                    {"hostname": "h", "pub_counts": [{"topic": "hidden", "count": 1}]}]},
                {"channel_name": "secret", "depth": 2, "clients": []}]},
            {"topic_name": "hidden", "depth": 5, "channels": []},
        ],
        "producers": [{"client_id": "x"}],
    });
    stats::filter(&mut reply, &access(&policy, "reader"));
    assert_eq!(reply["topics"].as_array().unwrap().len(), 1);
    assert_eq!(
        reply["topics"][0]["channels"],
        json!([{"channel_name": "billing", "depth": 1, "clients": []}])
    );
    assert_eq!(reply["producers"], json!([]));
    let text = stats::render_text(&reply, 3_723);
    assert!(text.contains("start_time 1970-01-01T00:00:00Z"), "{text}");
    assert!(text.contains("uptime 1h2m3s"), "{text}");
    assert!(text.contains("[orders         ] depth: 1"), "{text}");
    assert!(text.contains("[billing                  ]"), "{text}");
    assert!(text.contains("Producers: None"), "{text}");
}

#[test]
fn names_are_checked_as_nsqd_checks_them() {
    use super::args;
    let long = "x".repeat(65);
    let query = Query::parse(Some(&format!("topic={long}&channel=ok")));
    let refused = args::topic(&query, args::ARG_CODES).unwrap_err();
    assert_eq!(refused.into_response().status(), StatusCode::BAD_REQUEST);
    let query = Query::parse(Some("topic=orders&channel=bad%1Bname"));
    assert!(args::topic_channel(&query, args::ARG_CODES).is_err());
    let query = Query::parse(Some("topic=orders%23ephemeral&channel=c%23ephemeral"));
    assert_eq!(
        args::topic_channel(&query, args::ARG_CODES).unwrap(),
        ("orders#ephemeral", "c#ephemeral")
    );
    // Optional names: absent or empty means all.
    let query = Query::parse(Some("topic=&format=json"));
    assert_eq!(
        args::optional(&query, "topic", args::ARG_CODES).unwrap(),
        None
    );
    assert_eq!(
        args::optional(&query, "channel", args::ARG_CODES).unwrap(),
        None
    );
    let query = Query::parse(Some("channel=a/b"));
    assert!(args::optional(&query, "channel", args::ARG_CODES).is_err());
}

#[test]
fn nsqadmin_paths_that_name_topics_are_checked() {
    use super::nsqadmin::check_names;
    assert!(check_names("/").is_ok());
    assert!(check_names("/static/main.js").is_ok());
    assert!(check_names("/topics/orders").is_ok());
    assert!(check_names("/api/topics/orders/billing").is_ok());
    assert!(check_names("/api/topics/orders%23ephemeral").is_ok());
    assert!(check_names(&format!("/topics/{}", "x".repeat(65))).is_err());
    assert!(check_names("/api/topics/or%1Bders").is_err());
    assert!(check_names("/api/topics/orders/bil%0Aling").is_err());
    assert!(check_names("/api/topics/a/b/c").is_err());
}

#[test]
fn framing_reads_the_body_length_and_whether_the_request_is_the_last() {
    use request::Framing;
    let of = |text: &str| request::screen_head(text.as_bytes());
    let kept = |body| Ok(Framing { body, last: false });
    let last = |body| Ok(Framing { body, last: true });
    assert_eq!(of("GET /ping HTTP/1.1\r\nHost: g\r\n\r\n"), kept(Some(0)));
    assert_eq!(
        of("POST /pub HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
        kept(Some(12))
    );
    assert_eq!(
        of("POST /pub HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        last(None)
    );
    assert_eq!(
        of("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"),
        last(Some(0))
    );
    assert_eq!(of("GET / HTTP/1.0\r\n\r\n"), last(Some(0)));
    assert_eq!(
        of("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        kept(Some(0))
    );
    assert_eq!(
        of("GET / HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n"),
        kept(Some(0))
    );
    // The screen's refusals come first: an unreadable length is only reported after them.
    assert_eq!(
        of("POST /pub HTTP/1.1\r\nContent-Length: x\r\nX-A: 1\n\r\n"),
        Err(HeadError::BareLineFeed)
    );
    for bad in ["+5", "", "5 5", "0x10", "99999999999999999999999"] {
        let text = format!("POST /pub HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(of(&text), Err(HeadError::Malformed), "{bad:?}");
    }
}
