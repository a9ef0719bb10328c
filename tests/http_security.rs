//! The HTTP fronts under attack, end to end against real nsqd and nsqlookupd: connection caps
//! and deadlines on every listener, name validation before anything is logged or forwarded,
//! `/stats` without other clients' details, cross-site requests, slow readers, PROXY headers,
//! producers that describe themselves falsely, and anonymous discovery.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod http_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::wire::Command as Nsq;
use common::{refusing_port, Gate, Lookupd, Nsqadmin, Nsqd, Pki};
use http_support::{policy, request, request_with, start, OPS_KEY, ORDERS_ADMIN_KEY, WRITER_KEY};

/// The tests here run one at a time: each starts nsqd, nsqlookupd, nsqgate and often nsqadmin,
/// and several drive thousands of connections or requests; side by side on a 2-core machine
/// they would starve each other's deadlines.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// nsqgate with all three HTTPS fronts: nsqd's (and its plain listener), nsqlookupd's (the one
/// nsqd registered as a configured node) and nsqadmin's (a real nsqadmin when asked for).
struct Fronts {
    pki: Pki,
    nsqd: Nsqd,
    lookupd: Lookupd,
    gate: Gate,
    nsqd_front: SocketAddr,
    lookupd_front: SocketAddr,
    admin_front: SocketAddr,
    /// Held so nsqadmin runs as long as the fronts.
    _nsqadmin: Option<Nsqadmin>,
    /// Held so the admin front's upstream keeps refusing when there is no nsqadmin.
    _refusing: tokio::net::TcpSocket,
}

/// `lookupd_extra` goes into `[http.lookupd]`; `extra` at the end.
fn fronts(lookupd_extra: &str, extra: &str, with_nsqadmin: bool) -> Fronts {
    let pki = Pki::new();
    pki.write_policy("http-policy", "http.toml", &policy());
    let lookupd = Lookupd::start();
    let register = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let nsqd = Nsqd::start_with(&pki, "nsqd", &[&register, "--broadcast-address=127.0.0.1"]);
    // nsqadmin's 5 s default cuts off a slow lookupd (100,000 topics on a loaded machine)
    // with a 502, which is not what these tests are about.
    let nsqadmin = with_nsqadmin
        .then(|| Nsqadmin::start_with(&lookupd, &["--http-client-request-timeout=60s"]));
    // Without nsqadmin, the front's upstream is a port that refuses connections.
    let refusing = refusing_port();
    let admin_upstream = nsqadmin.as_ref().map_or(refusing.1, |admin| admin.http);
    let config = format!(
        r#"
[auth]
require_identity = true
policy_dir = "http-policy"

[http.nsqd]
listen = "127.0.0.1:0"
plain_listen = "127.0.0.1:0"
upstream = "{nsqd_https}"

[http.lookupd]
listen = "127.0.0.1:0"
upstream = "{lookupd_http}"
{lookupd_extra}

[[http.lookupd.nodes]]
broadcast_address = "127.0.0.1"
tcp_port = {tcp}
http_port = {http}
gate_address = "gate.example"
gate_tcp_port = 4150
gate_http_port = 4151

[http.nsqadmin]
listen = "127.0.0.1:0"
upstream = "{admin_upstream}"
{extra}
"#,
        nsqd_https = nsqd.https,
        lookupd_http = lookupd.http,
        tcp = nsqd.tcp.port(),
        http = nsqd.http.port(),
    );
    let gate = Gate::start_with(&pki, &nsqd, "127.0.0.1", "ca.pem", &config);
    Fronts {
        pki,
        nsqd,
        lookupd,
        nsqd_front: gate.http("nsqd"),
        lookupd_front: gate.http("nsqlookupd"),
        admin_front: gate.http("nsqadmin"),
        gate,
        _nsqadmin: nsqadmin,
        _refusing: refusing.0,
    }
}

impl Fronts {
    /// The topics nsqlookupd knows, asked directly.
    fn lookupd_topics(&self) -> Vec<String> {
        let body = common::http_get(self.lookupd.http, "/topics");
        let topics: serde_json::Value = serde_json::from_str(&body).unwrap();
        topics["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }
}

// === 8.3: every listener counts against the caps and closes ===

#[tokio::test]
async fn plain_listener_counts_against_the_caps_and_closes_after_answering() {
    let _serial = SERIAL.lock().await;
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
    // (The slot of the connection above may still be held for a moment: a third that is
    // answered is tried again with two fresh idle connections.)
    let mut held = Vec::new();
    let refused = eventually(Duration::from_secs(20), async || {
        held.clear();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..2 {
            held.push(TcpStream::connect(s.plain).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
        let mut plain = TcpStream::connect(s.plain).await.unwrap();
        let _ = plain
            .write_all(b"GET /ping HTTP/1.1\r\nHost: g\r\n\r\n")
            .await;
        read_to_close(&mut plain, Duration::from_secs(10))
            .await
            .is_some_and(|bytes| !bytes.is_empty())
    })
    .await;
    assert!(served, "the slots are given back");
}

#[tokio::test]
async fn plain_listener_has_the_head_deadline_of_the_fronts() {
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
    // The held request must outlive the whole wait below, however slow the machine.
    let s = start(
        &[],
        "\n[http]\nrequest_timeout_ms = 120000\n\n[connections]\nmax_per_identity = 1\n",
    );
    // A publish whose body never comes holds its connection (and its identity's slot).
    let mut held = http_support::tls_stream(&s.pki, s.https).await;
    let head = format!(
        "POST /pub?topic=orders HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {WRITER_KEY}\r\nContent-Length: 10\r\n\r\n"
    );
    held.write_all(head.as_bytes()).await.unwrap();
    held.flush().await.unwrap();
    // Only once the held request has been authenticated (its slot is taken right after) may
    // the competing requests start: otherwise one of them can take the slot first and the
    // held request is the one refused.
    let held_from = held.get_ref().0.local_addr().unwrap().to_string();
    s.gate.wait_audit("the held request's authentication", |e| {
        e["action"] == "auth" && e["outcome"] == "success" && e["remote"] == held_from.as_str()
    });

    let mut last = StatusCode::OK;
    let refused = eventually(Duration::from_secs(60), async || {
        let reply = request(&s.pki, s.https, Method::GET, "/stats", Some(WRITER_KEY), "").await;
        last = reply.status;
        reply.status == StatusCode::TOO_MANY_REQUESTS
            && reply.json()["message"] == "TOO_MANY_CONNECTIONS"
    })
    .await;
    assert!(
        refused,
        "a second request of the same identity is refused (last: {last}); nsqgate's log:\n{}",
        s.gate.log()
    );
    // Another identity is not affected.
    let reply = request(&s.pki, s.https, Method::GET, "/stats", Some(OPS_KEY), "").await;
    assert_eq!(reply.status, StatusCode::OK);
    drop(held);
}

// === 9.5: names are checked before anything is logged or forwarded ===

#[tokio::test]
async fn every_front_refuses_bad_names_before_logging_or_forwarding() {
    let _serial = SERIAL.lock().await;
    let f = fronts("", "", false);
    let huge = "x".repeat(50_000);
    let (pki, nsqd_front, lookupd_front) = (&f.pki, f.nsqd_front, f.lookupd_front);
    let cases: Vec<(SocketAddr, Method, String, &str, &str)> = vec![
        (
            lookupd_front,
            Method::GET,
            format!("/lookup?topic={huge}"),
            WRITER_KEY,
            "INVALID_ARG_TOPIC",
        ),
        (
            lookupd_front,
            Method::GET,
            format!("/channels?topic={huge}"),
            WRITER_KEY,
            "INVALID_ARG_TOPIC",
        ),
        (
            lookupd_front,
            Method::POST,
            format!("/topic/create?topic={huge}"),
            WRITER_KEY,
            "INVALID_ARG_TOPIC",
        ),
        (
            lookupd_front,
            Method::POST,
            "/topic/delete?topic=a%1B%5B31mb".to_owned(),
            OPS_KEY,
            "INVALID_ARG_TOPIC",
        ),
        (
            lookupd_front,
            Method::POST,
            format!("/topic/tombstone?topic={huge}&node=x:1"),
            OPS_KEY,
            "INVALID_ARG_TOPIC",
        ),
        (
            lookupd_front,
            Method::POST,
            format!("/channel/create?topic=orders&channel={huge}"),
            WRITER_KEY,
            "INVALID_ARG_CHANNEL",
        ),
        (
            nsqd_front,
            Method::GET,
            format!("/stats?format=json&topic={huge}"),
            WRITER_KEY,
            "INVALID_ARG_TOPIC",
        ),
        (
            nsqd_front,
            Method::GET,
            format!("/stats?topic=orders&channel={huge}"),
            WRITER_KEY,
            "INVALID_ARG_CHANNEL",
        ),
        (
            nsqd_front,
            Method::POST,
            format!("/pub?topic={huge}"),
            WRITER_KEY,
            "INVALID_TOPIC",
        ),
        (
            nsqd_front,
            Method::POST,
            format!("/topic/pause?topic={huge}"),
            OPS_KEY,
            "INVALID_TOPIC",
        ),
        (
            f.admin_front,
            Method::GET,
            format!("/api/topics/{huge}"),
            OPS_KEY,
            "INVALID_TOPIC",
        ),
        (
            f.admin_front,
            Method::DELETE,
            format!("/api/topics/orders/{huge}"),
            OPS_KEY,
            "INVALID_CHANNEL",
        ),
        (
            f.admin_front,
            Method::GET,
            "/topics/or%0D%0Aders".to_owned(),
            OPS_KEY,
            "INVALID_TOPIC",
        ),
    ];
    for (front, method, path, key, code) in cases {
        let reply = request(pki, front, method.clone(), &path, Some(key), "").await;
        assert_eq!(
            (reply.status, reply.json()["message"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{method} {path:.60}"
        );
    }
    let log = f.gate.log();
    assert!(
        !log.contains(&"x".repeat(1000)),
        "no long name reached the log"
    );
    assert!(
        !log.contains("a\u{1b}[31mb"),
        "no escape sequence reached the log"
    );
    // Nothing was created anywhere.
    assert!(f.nsqd.stats()["topics"].as_array().unwrap().is_empty());
    assert_eq!(f.lookupd.producers("orders"), 0);
}

// === 8.2: /stats shows other clients only to admins ===

#[tokio::test]
async fn stats_shows_clients_only_to_admins_and_pub_counts_only_for_visible_topics() {
    let _serial = SERIAL.lock().await;
    let s = start(&[], "");
    // A subscriber to `orders` through nsqgate's TCP listener that also published to `secrets`.
    let connector = common::nsqclient::tls_connector(&s.pki.path("ca.pem"), None);
    let identify = serde_json::json!({
        "client_id": "secret-client", "hostname": "secret-host", "user_agent": "secret-agent/1.0"
    });
    let (mut client, _) =
        common::nsqclient::RawClient::upgraded(s.gate.addr, &connector, identify).await;
    assert!(client.auth(OPS_KEY).await.is_some(), "AUTH answered");
    let reply = client.publish("secrets", b"x").await.unwrap();
    assert_eq!(&reply.data[..], b"OK");
    client
        .send(&Nsq::Sub {
            topic: "orders".into(),
            channel: "billing".into(),
        })
        .await;
    assert_eq!(&client.read_frame().await.unwrap().data[..], b"OK");

    let stats_as = |key: &'static str, format: &'static str| {
        let (pki, https) = (&s.pki, s.https);
        async move {
            let path = format!("/stats{format}");
            let reply = request(pki, https, Method::GET, &path, Some(key), "").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            reply
        }
    };
    let billing_clients = |stats: &serde_json::Value| -> Vec<serde_json::Value> {
        let orders = stats["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic_name"] == "orders")
            .unwrap()
            .clone();
        orders["channels"][0]["clients"].as_array().unwrap().clone()
    };
    let pub_topics = |client: &serde_json::Value| -> Vec<String> {
        let mut topics: Vec<String> = client["pub_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["topic"].as_str().unwrap().to_owned())
            .collect();
        topics.sort();
        topics
    };

    // The operator sees the client and everything it published.
    let ops = stats_as(OPS_KEY, "?format=json").await.json();
    let clients = billing_clients(&ops);
    assert_eq!(clients.len(), 1, "{ops}");
    assert_eq!(pub_topics(&clients[0]), ["secrets"], "{ops}");
    let ops_text = stats_as(OPS_KEY, "").await.text();
    assert!(
        ops_text.contains("\n        ["),
        "a client line: {ops_text}"
    );

    // An admin of `orders` sees the client, but only its counts for topics it may see.
    let admin = stats_as(ORDERS_ADMIN_KEY, "?format=json").await.json();
    let clients = billing_clients(&admin);
    assert_eq!(clients.len(), 1, "{admin}");
    assert!(pub_topics(&clients[0]).is_empty(), "{admin}");
    assert!(!admin.to_string().contains("secrets"), "{admin}");
    let admin_text = stats_as(ORDERS_ADMIN_KEY, "").await.text();
    assert!(!admin_text.contains("secrets"), "{admin_text}");

    // A publisher/subscriber without admin sees the channel but none of its clients.
    let writer = stats_as(WRITER_KEY, "?format=json").await.json();
    assert_eq!(
        billing_clients(&writer),
        Vec::<serde_json::Value>::new(),
        "{writer}"
    );
    for leaked in [
        "client_id",
        "hostname",
        "user_agent",
        "remote_address",
        "pub_counts",
    ] {
        assert!(!writer.to_string().contains(leaked), "{leaked} in {writer}");
    }
    let writer_text = stats_as(WRITER_KEY, "").await.text();
    assert!(writer_text.contains("[billing"), "{writer_text}");
    assert!(
        !writer_text.contains("\n        ["),
        "no client line: {writer_text}"
    );
    assert!(!writer_text.contains("secret"), "{writer_text}");
}

// === 8.4: cross-site request forgery ===

/// The headers Chromium sends with nsqadmin's own jQuery calls (`$.post`, `$.ajax` DELETE)
/// from a page of the same origin, plus the bearer token an authenticating proxy adds.
fn browser_headers(front: SocketAddr, origin: &str, site: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {OPS_KEY}")),
        ("sec-ch-ua-platform", "\"Linux\"".into()),
        ("x-useragent", "nsqadmin/1.3.0".into()),
        ("sec-ch-ua", "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"".into()),
        ("sec-ch-ua-mobile", "?0".into()),
        ("accept", "application/vnd.nsq; version=1.0".into()),
        ("content-type", "application/json".into()),
        ("x-requested-with", "XMLHttpRequest".into()),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36".into()),
        ("origin", origin.to_owned()),
        ("sec-fetch-site", site.to_owned()),
        ("sec-fetch-mode", "cors".into()),
        ("sec-fetch-dest", "empty".into()),
        ("referer", format!("https://{front}/lookup")),
        ("accept-language", "en-US,en;q=0.9".into()),
    ]
}

#[tokio::test]
async fn cross_site_requests_are_refused_and_nsqadmins_own_pages_keep_working() {
    let _serial = SERIAL.lock().await;
    let f = fronts(
        "",
        "\n[http]\nallowed_origins = [\"https://ops.example.com\"]\n",
        true,
    );
    let (pki, admin) = (&f.pki, f.admin_front);
    let own = format!("https://{admin}");

    // nsqadmin's own create and delete, as the browser sends them from its page.
    let create = br#"{"topic":"made-in-browser","channel":""}"#;
    let same = browser_headers(admin, &own, "same-origin");
    let reply = request_with(pki, admin, Method::POST, "/api/topics", &same, &create[..]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f.lookupd_topics().contains(&"made-in-browser".to_owned()) {
        assert!(
            Instant::now() < deadline,
            "nsqadmin created the topic in nsqlookupd"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = request_with(
        pki,
        admin,
        Method::DELETE,
        "/api/topics/made-in-browser",
        &same,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // The same calls started by another site's page.
    let evil = browser_headers(admin, "https://evil.example", "cross-site");
    let create = br#"{"topic":"made-by-evil","channel":""}"#;
    let reply = request_with(pki, admin, Method::POST, "/api/topics", &evil, &create[..]).await;
    assert_eq!(
        (reply.status, reply.json()["message"].as_str()),
        (StatusCode::FORBIDDEN, Some("CROSS_SITE_REQUEST_REFUSED"))
    );
    let reply = request_with(pki, admin, Method::DELETE, "/api/topics/orders", &evil, "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // A form posted to the nsqd front by another site: no Sec-Fetch-Site (an older browser),
    // only its Origin; then a same-site page (a sibling host) with no Origin at all.
    let form = vec![
        ("authorization", format!("Bearer {OPS_KEY}")),
        (
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
        ("origin", "https://evil.example".to_owned()),
    ];
    let nsqd = f.nsqd_front;
    let reply = request_with(pki, nsqd, Method::POST, "/pub?topic=forged", &form, "x=1").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let sibling = vec![
        ("authorization", format!("Bearer {OPS_KEY}")),
        ("sec-fetch-site", "same-site".to_owned()),
    ];
    let reply = request_with(
        pki,
        nsqd,
        Method::POST,
        "/topic/delete?topic=orders",
        &sibling,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let reply = request_with(
        pki,
        f.lookupd_front,
        Method::POST,
        "/topic/create?topic=forged",
        &form,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());

    // An origin listed in allowed_origins may; a client that is not a browser is unaffected.
    let ops_page = browser_headers(nsqd, "https://ops.example.com", "cross-site");
    let reply = request_with(
        pki,
        nsqd,
        Method::POST,
        "/pub?topic=allowed",
        &ops_page,
        "m",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = request(
        pki,
        nsqd,
        Method::POST,
        "/pub?topic=allowed",
        Some(OPS_KEY),
        "m",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    assert!(!f.nsqd.topic_exists("forged"));
    assert!(!f
        .lookupd_topics()
        .iter()
        .any(|t| t == "forged" || t == "made-by-evil"));
    assert_eq!(f.nsqd.message_count("allowed"), 2);
    let refusals = f
        .gate
        .audit_events()
        .into_iter()
        .filter(|e| e["action"] == "request" && e["outcome"] == "deny")
        .count();
    assert_eq!(refusals, 5, "every refusal is audited");
}

// === 8.11a: a client that stops reading is cut off after write_ms ===

/// Open client connections nsqgate counts, read from `/metrics` on `front`.
async fn open_connections(f: &Fronts) -> u64 {
    let reply = request(
        &f.pki,
        f.nsqd_front,
        Method::GET,
        "/metrics",
        Some(OPS_KEY),
        "",
    )
    .await;
    let metrics = common::prom::Exposition::parse(&reply.text());
    assert!(metrics.has("nsqgate_connections_open"), "{}", reply.text());
    metrics.sum("nsqgate_connections_open", &[]) as u64
}

/// Sends `GET path` over TLS from a socket with a tiny receive buffer, then reads nothing.
async fn stalled_reader(
    f: &Fronts,
    front: SocketAddr,
    path: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(front).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = http_support::connector(&f.pki)
        .connect(name, tcp)
        .await
        .unwrap();
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: {front}\r\nAuthorization: Bearer {OPS_KEY}\r\n\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

#[tokio::test]
async fn a_client_that_stops_reading_a_large_reply_is_cut_off() {
    let _serial = SERIAL.lock().await;
    // nsqadmin dedupes its topic list in quadratic time: 100,000 names take it a minute or
    // more on a loaded machine, so nsqgate waits for it longer than its 60 s default.
    let f = fronts(
        "",
        "\n[timeouts]\nwrite_ms = 1000\n\n[http]\nupstream_timeout_ms = 300000\n",
        true,
    );
    // Topic lists of about 6 MB, more than loopback's socket buffers hold (4 MB): 100,000
    // topics registered in nsqlookupd directly, over one kept-alive connection.
    let mut lookupd = TcpStream::connect(f.lookupd.http).await.unwrap();
    let topics = 100_000;
    let mut requests = String::new();
    for i in 0..topics {
        requests.push_str(&format!(
            "POST /topic/create?topic=slow-reader-{i:06}-{} HTTP/1.1\r\nHost: l\r\nContent-Length: 0\r\n\r\n",
            "x".repeat(40)
        ));
    }
    let (mut read, mut write) = lookupd.split();
    let send = async { write.write_all(requests.as_bytes()).await.unwrap() };
    let answered = async {
        let (mut seen, mut tail) = (0, Vec::new());
        let mut chunk = vec![0u8; 64 * 1024];
        while seen < topics {
            let n = read.read(&mut chunk).await.unwrap();
            assert!(n > 0, "nsqlookupd closed while registering topics");
            tail.extend_from_slice(&chunk[..n]);
            seen += tail.windows(6).filter(|w| w == b" 200 O").count();
            tail = tail.split_off(tail.len().saturating_sub(5));
        }
    };
    tokio::join!(send, answered);
    let before = open_connections(&f).await;

    // Two readers that stop: nsqadmin's topic list (streamed from nsqadmin) and the lookupd
    // front's (buffered and filtered by nsqgate).
    let stalled = [
        stalled_reader(&f, f.admin_front, "/api/topics").await,
        stalled_reader(&f, f.lookupd_front, "/topics").await,
    ];
    // Both are held while nsqgate writes to them...
    let held = eventually(Duration::from_secs(60), async || {
        open_connections(&f).await >= before + 2
    })
    .await;
    assert!(held, "both readers were served");
    // ...and both are cut off once no byte moved for write_ms. nsqadmin may still be
    // deduplicating its list when the reader stalls (nsqgate writes nothing until it answers),
    // so the deadline is nsqgate's upstream timeout, not a bound on write_ms.
    let cut = eventually(Duration::from_secs(300), async || {
        open_connections(&f).await <= before
    })
    .await;
    assert!(
        cut,
        "a client that reads nothing is disconnected after write_ms"
    );
    for mut tls in stalled {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut got)).await;
        let text = String::from_utf8_lossy(&got);
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let head = head.to_ascii_lowercase();
        let promised = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse::<usize>().unwrap());
        match promised {
            Some(length) => assert!(body.len() < length, "cut short: {} of {length}", body.len()),
            None => assert!(
                !body.ends_with("0\r\n\r\n"),
                "the chunked reply never ended"
            ),
        }
    }
}

// === 9.6: PROXY headers on the HTTP fronts ===

/// A TCP connection from `source` (a loopback address) that first sends `preamble`.
async fn connect_from(source: [u8; 4], to: SocketAddr, preamble: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut tcp = socket.connect(to).await.unwrap();
    tcp.write_all(preamble.as_bytes()).await.unwrap();
    tcp
}

/// TLS over `tcp`, then one request with a key nsqgate does not know (401, audited with the
/// client address); `None` when nsqgate closed the connection instead.
async fn unknown_key_request(s: &http_support::Setup, tcp: TcpStream) -> Option<StatusCode> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = http_support::connector(&s.pki)
        .connect(name, tcp)
        .await
        .ok()?;
    let head = "GET /stats HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer nsqk_unknown\r\n\r\n";
    tls.write_all(head.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    let code = answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    StatusCode::from_u16(code).ok()
}

#[tokio::test]
async fn http_fronts_read_proxy_headers_from_trusted_balancers_only() {
    let _serial = SERIAL.lock().await;
    let s = start(
        &[],
        "\n[connections]\nmax_per_ip = 1\nproxy_protocol_from = [\"127.0.0.1\"]\n",
    );
    let proxy = |client: &str, port: u16| format!("PROXY TCP4 {client} 127.0.0.1 {port} 443\r\n");

    // One connection held for 192.0.2.10 (its cap is one).
    let held = connect_from([127, 0, 0, 1], s.https, &proxy("192.0.2.10", 40010)).await;
    // Another client behind the same balancer is served, and audited under its own address.
    let other = connect_from([127, 0, 0, 1], s.https, &proxy("192.0.2.11", 40011)).await;
    assert_eq!(
        unknown_key_request(&s, other).await,
        Some(StatusCode::UNAUTHORIZED)
    );
    let audited = |remote: &str| {
        s.gate
            .audit_events()
            .iter()
            .any(|e| e["action"] == "auth" && e["remote"] == remote)
    };
    assert!(
        audited("192.0.2.11:40011"),
        "the audit names the real client"
    );
    // A second connection for 192.0.2.10 is over its cap (once the first is counted).
    let refused = eventually(Duration::from_secs(20), async || {
        let again = connect_from([127, 0, 0, 1], s.https, &proxy("192.0.2.10", 40012)).await;
        unknown_key_request(&s, again).await.is_none()
    })
    .await;
    assert!(refused, "the per-IP cap applies to the named client");
    drop(held);

    // The plain listener reads the header too.
    let mut plain = connect_from([127, 0, 0, 1], s.plain, &proxy("192.0.2.13", 40013)).await;
    plain
        .write_all(b"GET /ping HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut plain, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer).contains("TLS_REQUIRED"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // From a source that is not a trusted balancer a header is not believed...
    let forged = connect_from([127, 0, 0, 2], s.https, &proxy("192.0.2.12", 40014)).await;
    assert_eq!(unknown_key_request(&s, forged).await, None);
    assert!(!audited("192.0.2.12:40014"));
    // ...and without one that source is served under its own address (once the forged
    // connection, refused and closed, has given back 127.0.0.2's single slot).
    let served = eventually(Duration::from_secs(20), async || {
        let direct = connect_from([127, 0, 0, 2], s.https, "").await;
        unknown_key_request(&s, direct).await == Some(StatusCode::UNAUTHORIZED)
    })
    .await;
    assert!(served, "a source without a header is served as itself");
    assert!(s
        .gate
        .audit_events()
        .iter()
        .any(|e| e["action"] == "auth"
            && e["remote"].as_str().unwrap_or("").starts_with("127.0.0.2:")));
}

// === 9.7: a producer is matched by where it registered from too ===

#[tokio::test]
async fn a_producer_claiming_a_nodes_description_from_elsewhere_is_dropped() {
    let _serial = SERIAL.lock().await;
    let f = fronts("", "", false);
    let mut create = TcpStream::connect(f.nsqd.http).await.unwrap();
    create
        .write_all(b"POST /topic/create?topic=orders HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let _ = read_to_close(&mut create, Duration::from_secs(20)).await;

    // A rogue registers with nsqlookupd from 127.0.0.2, describing itself as the configured
    // nsqd (same broadcast address and ports), in nsqlookupd's own TCP protocol.
    let mut rogue = connect_from([127, 0, 0, 2], f.lookupd.tcp, "  V1").await;
    let identity = serde_json::json!({
        "broadcast_address": "127.0.0.1", "hostname": "rogue", "version": "1.3.0",
        "tcp_port": f.nsqd.tcp.port(), "http_port": f.nsqd.http.port(),
    })
    .to_string();
    let mut identify = b"IDENTIFY\n".to_vec();
    identify.extend_from_slice(&u32::try_from(identity.len()).unwrap().to_be_bytes());
    identify.extend_from_slice(identity.as_bytes());
    identify.extend_from_slice(b"REGISTER orders\n");
    rogue.write_all(&identify).await.unwrap();
    let registered = eventually(Duration::from_secs(20), async || {
        f.lookupd.producers("orders") == 2
    })
    .await;
    assert!(registered, "nsqlookupd lists the nsqd and the rogue");

    let reply = request(
        &f.pki,
        f.lookupd_front,
        Method::GET,
        "/lookup?topic=orders",
        Some(WRITER_KEY),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let producers = reply.json()["producers"].as_array().unwrap().clone();
    assert_eq!(producers.len(), 1, "only the real nsqd: {producers:?}");
    assert_eq!(producers[0]["broadcast_address"], "gate.example");
    let reply = request(
        &f.pki,
        f.lookupd_front,
        Method::GET,
        "/nodes",
        Some(WRITER_KEY),
        "",
    )
    .await;
    assert_eq!(
        reply.json()["producers"].as_array().unwrap().len(),
        1,
        "{}",
        reply.text()
    );

    let reply = request(
        &f.pki,
        f.lookupd_front,
        Method::GET,
        "/metrics",
        Some(OPS_KEY),
        "",
    )
    .await;
    assert!(
        reply.text().contains("nsqgate_rogue_nsqd_dropped_total 2"),
        "{}",
        reply.text()
    );
    assert!(f
        .gate
        .log()
        .contains("registered from an address that is not the node"));
    drop(rogue);
}

// === 9.9: anonymous callers may discover and nothing else ===

#[tokio::test]
async fn anonymous_discovery_allows_lookup_and_nodes_only() {
    let _serial = SERIAL.lock().await;
    let f = fronts("anonymous_discovery = true", "", false);
    for path in [
        "/topic/create?topic=orders",
        "/channel/create?topic=orders&channel=billing",
    ] {
        let mut create = TcpStream::connect(f.nsqd.http).await.unwrap();
        let head = format!("POST {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        create.write_all(head.as_bytes()).await.unwrap();
        let answer = read_to_close(&mut create, Duration::from_secs(20))
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&answer).contains(" 200 "), "{path}");
    }
    let registered = eventually(Duration::from_secs(20), async || {
        f.lookupd.producers("orders") == 1
    })
    .await;
    assert!(registered);

    // What pynsq and nsqjs send to lookupd: no credential at all.
    let discovery = [("accept", "application/vnd.nsq; version=1.0".to_owned())];
    let (pki, front) = (&f.pki, f.lookupd_front);
    let reply = request_with(
        pki,
        front,
        Method::GET,
        "/lookup?topic=orders",
        &discovery,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let lookup = reply.json();
    let producers = lookup["producers"].as_array().unwrap();
    assert_eq!(producers.len(), 1, "{lookup}");
    assert_eq!(producers[0]["broadcast_address"], "gate.example");
    assert_eq!(producers[0]["tcp_port"], 4150);
    assert_eq!(
        lookup["channels"],
        serde_json::json!([]),
        "no channel names"
    );
    let reply = request_with(
        pki,
        front,
        Method::GET,
        "/lookup?topic=nope",
        &discovery,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = request_with(pki, front, Method::GET, "/nodes", &discovery, "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let nodes = reply.json();
    assert_eq!(
        nodes["producers"][0]["broadcast_address"], "gate.example",
        "{nodes}"
    );
    assert_eq!(
        nodes["producers"][0]["topics"],
        serde_json::json!([]),
        "no topic list"
    );

    // Nothing else: other lookupd endpoints, the nsqd front, the NSQ listener.
    for (addr, method, path) in [
        (front, Method::GET, "/topics"),
        (front, Method::GET, "/channels?topic=orders"),
        (front, Method::POST, "/topic/create?topic=anon"),
        (
            front,
            Method::POST,
            "/channel/delete?topic=orders&channel=billing",
        ),
        (front, Method::GET, "/debug"),
        (f.nsqd_front, Method::GET, "/stats"),
        (f.nsqd_front, Method::POST, "/pub?topic=orders"),
    ] {
        let reply = request_with(pki, addr, method.clone(), path, &discovery, "x").await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {}",
            reply.text()
        );
    }
    let connector = common::nsqclient::tls_connector(&pki.path("ca.pem"), None);
    let (mut client, _) =
        common::nsqclient::RawClient::upgraded(f.gate.addr, &connector, serde_json::json!({}))
            .await;
    let answer = client.sub("orders", "billing").await;
    assert!(
        answer.as_ref().is_none_or(|frame| &frame.data[..] != b"OK"),
        "an anonymous TCP client may not subscribe: {:?}",
        answer.map(|f| common::nsqclient::frame_text(&f))
    );
    assert!(!f.lookupd_topics().contains(&"anon".to_owned()));
    // With a credential, the caller's full (filtered) view as before.
    let reply = request(
        pki,
        front,
        Method::GET,
        "/lookup?topic=orders",
        Some(WRITER_KEY),
        "",
    )
    .await;
    assert_eq!(reply.json()["channels"], serde_json::json!(["billing"]));
}
