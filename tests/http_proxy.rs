//! The HTTP fronts end to end: HTTPS requests (hyper over rustls) → nsqgate → stock nsqd's
//! HTTPS port and stock nsqlookupd, checked by the replies and by what nsqd's /stats holds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod http_support;

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use common::{Gate, Lookupd, Nsqadmin, Nsqd, Pki};
use http_support::{
    assert_v1, policy, raw_request, request, request_with, start, tls_stream, OPS_KEY, WRITER_KEY,
};

// === nsqd front ===

#[tokio::test]
async fn pub_and_mpub_follow_the_policy() {
    let s = start(&[], "");
    let (pki, gate) = (&s.pki, s.https);

    let reply = request(
        pki,
        gate,
        Method::POST,
        "/pub?topic=orders",
        Some(WRITER_KEY),
        "one",
    )
    .await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "OK")
    );
    assert_v1(&reply);

    let reply = request(
        pki,
        gate,
        Method::POST,
        "/pub?topic=orders&defer=1000",
        Some(WRITER_KEY),
        "deferred",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let reply = request(
        pki,
        gate,
        Method::POST,
        "/mpub?topic=orders",
        Some(WRITER_KEY),
        "a\nb\n\nc\n",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let mut binary = 2u32.to_be_bytes().to_vec();
    for body in [&b"bin-1"[..], &b"bin-two"[..]] {
        binary.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        binary.extend_from_slice(body);
    }
    let reply = request(
        pki,
        gate,
        Method::POST,
        "/mpub?topic=orders&binary=true",
        Some(WRITER_KEY),
        binary,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // The same key in X-NSQ-Auth.
    let headers = [("x-nsq-auth", WRITER_KEY.to_owned())];
    let reply = request_with(
        pki,
        gate,
        Method::POST,
        "/pub?topic=orders",
        &headers,
        "x-nsq-auth",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // Denied: another topic.
    let reply = request(
        pki,
        gate,
        Method::POST,
        "/pub?topic=secrets",
        Some(WRITER_KEY),
        "no",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let body = reply.json();
    assert_eq!(
        (body["action"].as_str(), body["topic"].as_str()),
        (Some("publish"), Some("secrets"))
    );
    let reply = request(
        pki,
        gate,
        Method::POST,
        "/mpub?topic=secrets",
        Some(WRITER_KEY),
        "no\nno",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // No identity, or a wrong one.
    let reply = request(pki, gate, Method::POST, "/pub?topic=orders", None, "anon").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["message"], "UNAUTHENTICATED");
    let wrong = "nsqk_not_a_configured_key_0000000000000000000000000";
    let reply = request(
        pki,
        gate,
        Method::POST,
        "/pub?topic=orders",
        Some(wrong),
        "bad",
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // Bad arguments are answered like nsqd would.
    let reply = request(pki, gate, Method::POST, "/pub", Some(WRITER_KEY), "x").await;
    assert_eq!(
        (reply.status, reply.json()["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("MISSING_ARG_TOPIC"))
    );

    // 1 + 1 deferred + 3 text + 2 binary + 1 via X-NSQ-Auth; nothing else landed anywhere.
    assert_eq!(s.nsqd.message_count("orders"), 8);
    assert!(!s.nsqd.topic_exists("secrets"));

    let audit = s.gate.audit_events();
    assert!(
        audit.iter().any(|e| e["action"] == "publish"
            && e["outcome"] == "deny"
            && e["topic"] == "secrets"
            && e["identity"] == "writer"),
        "the denial is audited"
    );
}

#[tokio::test]
async fn oversized_bodies_get_413_and_nothing_lands() {
    let s = start(&[], "");
    let (pki, gate) = (&s.pki, s.https);
    let max = common::MAX_MSG_SIZE;

    // Declared too big: refused from Content-Length.
    let reply = request(
        pki,
        gate,
        Method::POST,
        "/pub?topic=orders",
        Some(WRITER_KEY),
        vec![b'x'; max + 1],
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["message"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("MSG_TOO_BIG"))
    );
    assert_v1(&reply);

    // Chunked, so only counting while streaming can catch it.
    let chunk = vec![b'y'; 64 * 1024];
    let mut raw = format!(
        "POST /pub?topic=orders HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {WRITER_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..(max / chunk.len() + 2) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_request(pki, gate, &raw).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
    assert!(answer.contains("MSG_TOO_BIG"), "{answer:.300}");

    // One line of a text MPUB over the message limit.
    let mut body = b"small\n".to_vec();
    body.extend(vec![b'z'; max + 1]);
    let reply = request(
        pki,
        gate,
        Method::POST,
        "/mpub?topic=orders",
        Some(WRITER_KEY),
        body,
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["message"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("MSG_TOO_BIG"))
    );

    // A binary MPUB whose declared size lies.
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend_from_slice(&100u32.to_be_bytes());
    body.extend_from_slice(b"short");
    let reply = request(
        pki,
        gate,
        Method::POST,
        "/mpub?topic=orders&binary=1",
        Some(WRITER_KEY),
        body,
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["message"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("BAD_MESSAGE"))
    );

    assert!(!s.nsqd.topic_exists("orders"), "nothing reached nsqd");
    // The two bodies over the limit (declared, then streamed) are counted as such.
    let reply = request(pki, gate, Method::GET, "/metrics", Some(OPS_KEY), "").await;
    let metrics = common::prom::Exposition::parse(&reply.text());
    let http_body = [("limit", "http_body")];
    let counted = metrics.sum("nsqgate_size_limit_refusals_total", &http_body);
    assert_eq!(counted, 2.0, "{}", reply.text());
}

#[tokio::test]
async fn stats_shows_only_the_callers_topics() {
    let s = start(&[], "");
    let (pki, gate) = (&s.pki, s.https);
    for path in [
        "/topic/create?topic=orders",
        "/topic/create?topic=secrets",
        "/channel/create?topic=orders&channel=billing",
        "/channel/create?topic=secrets&channel=audit",
    ] {
        let reply = request(pki, gate, Method::POST, path, Some(OPS_KEY), "").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    }
    assert!(s.nsqd.topic_exists("orders") && s.nsqd.topic_exists("secrets"));

    let names = |stats: &Value| -> Vec<String> {
        stats["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["topic_name"].as_str().unwrap().to_owned())
            .collect()
    };
    let reply = request(
        pki,
        gate,
        Method::GET,
        "/stats?format=json",
        Some(WRITER_KEY),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_v1(&reply);
    let stats = reply.json();
    assert_eq!(names(&stats), ["orders"]);
    assert_eq!(stats["topics"][0]["channels"][0]["channel_name"], "billing");

    let reply = request(pki, gate, Method::GET, "/stats", Some(WRITER_KEY), "").await;
    let text = reply.text();
    assert!(
        text.contains("[orders") && text.contains("billing"),
        "{text}"
    );
    assert!(
        !text.contains("secrets") && !text.contains("audit"),
        "{text}"
    );

    let reply = request(
        pki,
        gate,
        Method::GET,
        "/stats?format=json",
        Some(OPS_KEY),
        "",
    )
    .await;
    let mut all = names(&reply.json());
    all.sort();
    assert_eq!(all, ["orders", "secrets"]);

    let reply = request(pki, gate, Method::GET, "/stats?format=json", None, "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_operator_and_unknown_paths() {
    let s = start(&[], "");
    let (pki, gate) = (&s.pki, s.https);

    let reply = request(
        pki,
        gate,
        Method::POST,
        "/topic/create?topic=orders",
        Some(WRITER_KEY),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["action"], "admin");
    assert!(!s.nsqd.topic_exists("orders"));

    let reply = request(
        pki,
        gate,
        Method::GET,
        "/config/tls_key",
        Some(WRITER_KEY),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = request(
        pki,
        gate,
        Method::GET,
        "/config/tls_required",
        Some(OPS_KEY),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let reply = request(pki, gate, Method::GET, "/ping", None, "").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "OK")
    );
    let reply = request(pki, gate, Method::GET, "/info", None, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["version"], "1.3.0");

    let reply = request(pki, gate, Method::GET, "/no/such/path", Some(OPS_KEY), "").await;
    assert_eq!(
        (reply.status, reply.json()["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
    let reply = request(
        pki,
        gate,
        Method::GET,
        "/pub?topic=orders",
        Some(OPS_KEY),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);

    // Request smuggling shapes are refused before any parsing or forwarding.
    let both = format!(
        "POST /pub?topic=orders HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {WRITER_KEY}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    let answer = raw_request(pki, gate, both.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let twice = format!(
        "POST /pub?topic=orders HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {WRITER_KEY}\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nsmug"
    );
    let answer = raw_request(pki, gate, twice.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!s.nsqd.topic_exists("orders"));

    // The plain listener only points to HTTPS.
    let mut plain = std::net::TcpStream::connect(s.plain).unwrap();
    use std::io::{Read, Write};
    write!(plain, "GET /stats HTTP/1.0\r\nHost: g\r\n\r\n").unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 403") || answer.starts_with("HTTP/1.1 403"),
        "{answer}"
    );
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["message"], "TLS_REQUIRED");
    assert_eq!(body["https_port"], s.https.port());

    // /metrics: operators only.
    let reply = request(pki, gate, Method::GET, "/metrics", Some(WRITER_KEY), "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = request(pki, gate, Method::GET, "/metrics", Some(OPS_KEY), "").await;
    assert!(
        reply
            .text()
            .contains("nsqgate_http_smuggling_refused_total 2"),
        "{}",
        reply.text()
    );
    // Process-wide security counters too: this test was denied several times above.
    let metrics = common::prom::Exposition::parse(&reply.text());
    let deny = [("outcome", "deny")];
    assert!(
        metrics.sum("nsqgate_decisions_total", &deny) >= 2.0,
        "{}",
        reply.text()
    );
    let success = [("outcome", "success")];
    assert!(metrics.sum("nsqgate_authentications_total", &success) >= 1.0);
    assert!(metrics.sum("nsqgate_connections_open", &[]) >= 1.0);
    assert!(metrics.has("nsqgate_connections_refused_total"));
}

// === nsqlookupd front ===

/// POST on nsqd's plain HTTP port (open with --tls-required=tcp-https).
fn nsqd_post(nsqd: &Nsqd, path: &str) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(nsqd.http).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: n\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.contains(" 200 "), "{answer}");
}

#[tokio::test]
async fn lookup_rewrites_known_producers_and_drops_a_rogue_one() {
    let lookupd = Lookupd::start();
    let register = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let args = [register.as_str(), "--broadcast-address=127.0.0.1"];
    let pki = Pki::new();
    pki.write_policy("http-policy", "http.toml", &policy());
    let first = Nsqd::start_with(&pki, "nsqd", &args);
    let second = Nsqd::start_with(&pki, "nsqd", &args);
    let rogue = Nsqd::start_with(&pki, "nsqd", &args);
    for nsqd in [&first, &second, &rogue] {
        nsqd_post(nsqd, "/topic/create?topic=orders");
        nsqd_post(nsqd, "/topic/create?topic=secrets");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while lookupd.producers("orders") < 3 {
        assert!(
            Instant::now() < deadline,
            "three nsqd never registered with nsqlookupd"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let node = |nsqd: &Nsqd, name: &str, tcp: u16, http: u16| {
        format!(
            "[[http.lookupd.nodes]]\nbroadcast_address = \"127.0.0.1\"\ntcp_port = {}\nhttp_port = {}\ngate_address = \"{name}\"\ngate_tcp_port = {tcp}\ngate_http_port = {http}\n",
            nsqd.tcp.port(),
            nsqd.http.port(),
        )
    };
    let config = format!(
        "[auth]\nrequire_identity = true\npolicy_dir = \"http-policy\"\n\n[http.lookupd]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n\n{}\n{}",
        lookupd.http,
        node(&first, "gate-a.example", 14150, 14152),
        node(&second, "gate-b.example", 24150, 24152),
    );
    let gate = Gate::start_with(&pki, &first, "127.0.0.1", "ca.pem", &config);
    let front = gate.http("nsqlookupd");

    let reply = request(
        &pki,
        front,
        Method::GET,
        "/lookup?topic=orders",
        Some(WRITER_KEY),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_v1(&reply);
    let mut seen: Vec<(String, u64, u64, String)> = reply.json()["producers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["broadcast_address"].as_str().unwrap().to_owned(),
                p["tcp_port"].as_u64().unwrap(),
                p["http_port"].as_u64().unwrap(),
                p["remote_address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "gate-a.example".to_owned(),
                14150,
                14152,
                "gate-a.example:14150".to_owned()
            ),
            (
                "gate-b.example".to_owned(),
                24150,
                24152,
                "gate-b.example:24150".to_owned()
            ),
        ]
    );
    assert!(
        !reply.text().contains(&rogue.tcp.port().to_string()),
        "the rogue nsqd never appears"
    );

    // /nodes: the same rewrite, and only the caller's topics.
    let reply = request(&pki, front, Method::GET, "/nodes", Some(WRITER_KEY), "").await;
    let nodes = reply.json();
    let producers = nodes["producers"].as_array().unwrap();
    assert_eq!(producers.len(), 2, "{nodes}");
    for producer in producers {
        assert!(producer["broadcast_address"]
            .as_str()
            .unwrap()
            .ends_with(".example"));
        assert_eq!(producer["topics"], serde_json::json!(["orders"]));
    }

    // Topics the caller may not see are as unknown as missing ones.
    let reply = request(
        &pki,
        front,
        Method::GET,
        "/lookup?topic=secrets",
        Some(WRITER_KEY),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = request(&pki, front, Method::GET, "/topics", Some(WRITER_KEY), "").await;
    assert_eq!(reply.json()["topics"], serde_json::json!(["orders"]));
    let reply = request(&pki, front, Method::GET, "/lookup?topic=orders", None, "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // Every drop was logged and counted: one per reply that listed the rogue (/lookup, /nodes).
    let reply = request(&pki, front, Method::GET, "/metrics", Some(OPS_KEY), "").await;
    assert!(
        reply.text().contains("nsqgate_rogue_nsqd_dropped_total 2"),
        "{}",
        reply.text()
    );
    assert!(gate.log().contains("not a configured node"));
}

// === nsqadmin front ===

#[tokio::test]
async fn nsqadmin_needs_read_on_everything_and_admin_to_change() {
    let lookupd = Lookupd::start();
    let pki = Pki::new();
    pki.write_policy("http-policy", "http.toml", &policy());
    let nsqd = Nsqd::start(&pki);
    let nsqadmin = Nsqadmin::start(&lookupd);
    let config = format!(
        "[auth]\nrequire_identity = true\npolicy_dir = \"http-policy\"\n\n[http.nsqadmin]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n",
        nsqadmin.http
    );
    let gate = Gate::start_with(&pki, &nsqd, "127.0.0.1", "ca.pem", &config);
    let front = gate.http("nsqadmin");

    let reply = request(&pki, front, Method::GET, "/", None, "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = request(&pki, front, Method::GET, "/", Some(WRITER_KEY), "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["action"], "read");
    let reply = request(&pki, front, Method::GET, "/", Some(OPS_KEY), "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.text().contains("nsqadmin"), "{}", reply.text());
    let reply = request(&pki, front, Method::GET, "/api/topics", Some(OPS_KEY), "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.json().get("topics").is_some(), "{}", reply.text());
    let reply = request(
        &pki,
        front,
        Method::POST,
        "/api/topics",
        Some(WRITER_KEY),
        "{}",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["action"], "admin");
}

#[tokio::test]
async fn http_publishing_draws_on_the_same_rate_limits() {
    let rates = "\n[rate_limits]\non_limit = \"reject\"\nidentity = { messages_per_sec = 5, burst_messages = 5 }\n";
    let setup = start(&[], rates);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let reply = request(
            &setup.pki,
            setup.https,
            Method::POST,
            "/pub?topic=orders",
            Some(WRITER_KEY),
            format!("m{i}"),
        )
        .await;
        statuses.push(reply.status);
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(
                reply.json()["message"],
                "TOO_MANY_REQUESTS",
                "{}",
                reply.text()
            );
        }
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!((5..=6).contains(&ok), "{statuses:?}");
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // An MPUB counts every message in it: 3 messages on a (nearly) empty bucket are refused.
    let reply = request(
        &setup.pki,
        setup.https,
        Method::POST,
        "/mpub?topic=orders",
        Some(WRITER_KEY),
        "a\nb\nc\n",
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text()
    );
    assert_eq!(setup.nsqd.message_count("orders"), ok as u64);
}

#[tokio::test]
async fn curl_with_a_jwt_publishes_where_allowed() {
    let secret = "an-hs256-secret-of-at-least-32-bytes!!";
    let jwt_config = "\n[auth.jwt]\nkeys = [{ kid = \"hs\", algorithm = \"HS256\", secret_file = \"jwt.secret\" }]\n";
    // The secret file must exist before nsqgate starts: write it where the config resolves it.
    let setup = {
        let pki = Pki::new();
        common::write_secret(&pki.path("jwt.secret"), secret.as_bytes());
        pki.write_policy("http-policy", "http.toml", &policy());
        let nsqd = Nsqd::start(&pki);
        let config = format!(
            "[auth]\nrequire_identity = true\npolicy_dir = \"http-policy\"\n\n[http.nsqd]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n{jwt_config}",
            nsqd.https
        );
        let gate = Gate::start_with(&pki, &nsqd, "127.0.0.1", "ca.pem", &config);
        let https = gate.http("nsqd");
        (pki, nsqd, gate, https)
    };
    let (pki, nsqd, _gate, https) = setup;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("hs".into());
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "curl-user", "roles": ["writer"], "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let curl = |path: &str, body: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
            .arg(pki.path("ca.pem"))
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--data-binary", body])
            .arg(format!("https://127.0.0.1:{}{path}", https.port()))
            .output()
            .expect("curl (apt-get install curl)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    assert_eq!(curl("/pub?topic=orders", "hello").0, "200");
    assert_eq!(curl("/mpub?topic=orders", "a\nb\n").0, "200");
    let (code, body) = curl("/pub?topic=payments", "nope");
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("payments"), "{body}");
    assert_eq!(nsqd.message_count("orders"), 3);
    assert!(!nsqd.topic_exists("payments"));
}

#[tokio::test]
async fn http_connections_count_against_the_same_caps() {
    let setup = start(&[], "\n[connections]\nmax_per_ip = 2\n");
    let held = [
        tls_stream(&setup.pki, setup.https).await,
        tls_stream(&setup.pki, setup.https).await,
    ];
    // The third connection from this address is closed at once, before any TLS.
    let mut third = TcpStream::connect(setup.https).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = request(&setup.pki, setup.https, Method::GET, "/ping", None, "").await;
    assert_eq!(reply.status, StatusCode::OK);
}
