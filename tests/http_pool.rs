//! The HTTPS fronts keep their upstream connections alive: requests on one client connection
//! reuse one verified connection to nsqd (counted by nsqgate and seen in the kernel's socket
//! table), a connection nsqd dropped by restarting is replaced without the client noticing, an
//! idle one is closed after `upstream_idle_timeout_ms`, and a reload that changes the trust in
//! nsqd's certificate is never answered over a connection verified under the old trust. Real
//! nsqgate, real nsqd.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod http_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use common::prom::Exposition;
use common::{Gate, Nsqd, Pki};
use http_support::{policy, request, tls_stream, OPS_KEY, WRITER_KEY};

const OPENED: &str = "nsqgate_http_upstream_connections_opened_total";

/// nsqgate with an nsqd HTTPS front, verifying nsqd with the CA in `upstream-ca.pem` (a copy
/// of the test CA a test may replace), with `extra` tables.
fn start(pki: &Pki, nsqd: &Nsqd, extra: &str) -> (Gate, SocketAddr) {
    pki.write_policy("http-policy", "http.toml", &policy());
    std::fs::copy(pki.path("ca.pem"), pki.path("upstream-ca.pem")).unwrap();
    let config = format!(
        "[auth]\nrequire_identity = true\npolicy_dir = \"http-policy\"\n\n\
         [http.nsqd]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n\n{extra}",
        nsqd.https
    );
    let gate = Gate::start_with(pki, nsqd, "127.0.0.1", "upstream-ca.pem", &config);
    let https = gate.http("nsqd");
    (gate, https)
}

/// One HTTPS client connection to nsqgate, kept alive across requests.
struct KeptClient {
    sender: SendRequest<Full<Bytes>>,
}

impl KeptClient {
    async fn open(pki: &Pki, https: SocketAddr) -> KeptClient {
        let tls = tls_stream(pki, https).await;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        KeptClient { sender }
    }

    /// POST /pub on this connection: the status and the body.
    async fn publish(&mut self, topic: &str, body: &str) -> (u16, String) {
        self.sender
            .ready()
            .await
            .expect("the connection is still open");
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/pub?topic={topic}"))
            .header("host", "gate")
            .header("authorization", format!("Bearer {WRITER_KEY}"))
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response =
            tokio::time::timeout(Duration::from_secs(30), self.sender.send_request(request))
                .await
                .expect("an answer within 30 s")
                .unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Connections nsqgate opened to nsqd's HTTPS port, from its `/metrics`.
async fn opened(pki: &Pki, https: SocketAddr) -> f64 {
    let reply = request(pki, https, Method::GET, "/metrics", Some(OPS_KEY), "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let metrics = Exposition::parse(&reply.text());
    assert!(metrics.has(OPENED), "no {OPENED} in /metrics");
    metrics.sum(OPENED, &[("upstream", "nsqd")])
}

/// Established TCP connections whose local end is `port` on this host (nsqd's side of each
/// connection to its HTTPS port), from the kernel's socket table.
fn established_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields[1].rsplit_once(':').map(|(_, p)| p);
            local_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
                && fields[3] == "01"
        })
        .count()
}

/// Waits (up to 10 s) until `port` has `count` established connections.
async fn wait_established(port: u16, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while established_on(port) != count {
        assert!(
            Instant::now() < deadline,
            "{} established connections on port {port}, expected {count}",
            established_on(port)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 10 s) until the log has `count` lines holding every one of `parts`.
fn wait_log_lines(gate: &Gate, parts: &[&str], count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gate.log();
        let seen = log
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count();
        if seen >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} lines with {parts:?} expected; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn sequential_requests_on_one_client_connection_reuse_one_upstream_connection() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let (_gate, https) = start(&pki, &nsqd, "");
    let mut client = KeptClient::open(&pki, https).await;
    for n in 0..20 {
        assert_eq!(
            client.publish("orders", &format!("m{n}")).await,
            (200, "OK".into())
        );
    }
    assert_eq!(
        opened(&pki, https).await,
        1.0,
        "one connection to nsqd for 20 requests"
    );
    assert_eq!(established_on(nsqd.https.port()), 1);
    assert_eq!(nsqd.message_count("orders"), 20);
}

#[tokio::test]
async fn a_connection_nsqd_dropped_by_restarting_is_replaced_unnoticed() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let (_gate, https) = start(&pki, &nsqd, "");
    let mut client = KeptClient::open(&pki, https).await;
    assert_eq!(client.publish("orders", "before").await, (200, "OK".into()));
    assert_eq!(opened(&pki, https).await, 1.0);

    // SIGKILL: nsqd's end of the pooled connection closes without a word.
    let nsqd = Nsqd::restart(nsqd.kill_keeping_data());
    assert_eq!(client.publish("orders", "after").await, (200, "OK".into()));
    assert_eq!(
        opened(&pki, https).await,
        2.0,
        "a new connection to the new nsqd"
    );
    assert!(nsqd.message_count("orders") >= 1);
    assert_eq!(established_on(nsqd.https.port()), 1);
}

#[tokio::test]
async fn an_idle_upstream_connection_is_closed_after_the_idle_timeout() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let (_gate, https) = start(&pki, &nsqd, "[http]\nupstream_idle_timeout_ms = 1500\n");
    let mut client = KeptClient::open(&pki, https).await;
    assert_eq!(client.publish("orders", "one").await, (200, "OK".into()));
    // Kept after the answer...
    assert_eq!(established_on(nsqd.https.port()), 1, "kept for reuse");
    // ...and closed once idle for 1.5 s, while the client's connection stays open.
    wait_established(nsqd.https.port(), 0).await;
    assert_eq!(client.publish("orders", "two").await, (200, "OK".into()));
    assert_eq!(opened(&pki, https).await, 2.0);
    assert_eq!(nsqd.message_count("orders"), 2);
}

#[tokio::test]
async fn a_reload_that_changes_upstream_trust_never_reuses_old_connections() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let (gate, https) = start(&pki, &nsqd, "");
    let mut client = KeptClient::open(&pki, https).await;
    assert_eq!(client.publish("orders", "one").await, (200, "OK".into()));
    let reload = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &gate.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };

    // The test CA and another one: nsqd still verifies, but under a new trust.
    let other = nsqgate::certs::DevCa::generate("another CA").unwrap();
    let both = std::fs::read_to_string(pki.path("ca.pem")).unwrap() + &other.pem().cert;
    std::fs::write(pki.path("upstream-ca.pem"), both).unwrap();
    reload();
    wait_log_lines(&gate, &["what=\"upstream_tls\"", "reloaded"], 1);
    assert_eq!(client.publish("orders", "two").await, (200, "OK".into()));
    assert_eq!(
        opened(&pki, https).await,
        2.0,
        "verified again under the new trust"
    );

    // Only the other CA: nsqd can no longer be verified, and the connection verified before
    // is not used to pretend otherwise.
    std::fs::write(pki.path("upstream-ca.pem"), &other.pem().cert).unwrap();
    reload();
    wait_log_lines(&gate, &["what=\"upstream_tls\"", "reloaded"], 2);
    let (status, body) = client.publish("orders", "three").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(nsqd.message_count("orders"), 2);
}
