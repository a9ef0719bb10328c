//! The admin listener end to end: `/metrics` parsed as Prometheus text moves by exactly what
//! a scripted run did (publishes, denials, rate-limit refusals, a revocation), promtool finds
//! nothing wrong with it, a real Prometheus scrapes it, `/healthz` answers, and `/readyz`
//! follows nsqd going away and coming back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::nsqclient::{tls_connector, RawClient};
use common::prom::{get, Exposition};
use common::wire::{Command, FrameType};
use common::{GateConfig, Nsqd, Pki};
use nsqgate::auth::apikey;

/// Probing every 200 ms: `/readyz` follows nsqd within a second.
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\nprobe_interval_ms = 200";

fn metrics(admin: SocketAddr) -> Exposition {
    let (status, body) = get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    Exposition::parse(&body)
}

/// Waits (up to 10 s) until `ready` holds for `/metrics`; returns that scrape.
fn metrics_when(admin: SocketAddr, what: &str, ready: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metrics(admin);
        if ready(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{what} not seen in /metrics");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to 10 s) for `/readyz` to answer `status`; returns its body.
fn readyz_becomes(admin: SocketAddr, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (now, body) = get(admin, "/readyz");
        if now == status {
            return serde_json::from_str(&body).expect("/readyz JSON");
        }
        assert!(Instant::now() < deadline, "/readyz stayed {now}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Keys {
    writer: String,
    limited: String,
    reader: String,
}

/// `writer` publishes to `metrics.*`; `limited` too, at 1 message/s (burst 1); `reader`
/// subscribes to `metrics.*` (its key is later removed: a revocation).
fn policy(pki: &Pki, keys: &Keys, with_reader: bool) {
    let reader = if with_reader {
        format!(
            "[api_keys.reader]\nsha256 = \"{}\"\nroles = [\"reader\"]\n",
            common::key_sha256(keys.reader.as_bytes())
        )
    } else {
        String::new()
    };
    let text = format!(
        r#"
[roles.writer]
allow = [{{ action = "publish", topics = ["metrics.*"] }}]

[roles.limited]
allow = [{{ action = "publish", topics = ["metrics.*"] }}]
rate = {{ messages_per_sec = 1, burst_messages = 1 }}

[roles.reader]
allow = [{{ action = "subscribe", topics = ["metrics.*"], channels = ["*"] }}]

[api_keys.writer]
sha256 = "{}"
roles = ["writer"]

[api_keys.limited]
sha256 = "{}"
roles = ["limited"]

{reader}"#,
        common::key_sha256(keys.writer.as_bytes()),
        common::key_sha256(keys.limited.as_bytes()),
    );
    pki.write_policy("metrics-policy", "policy.toml", &text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_exactly_what_a_scripted_run_did() {
    const N: usize = 5; // publishes by the writer
    const M: usize = 3; // denied publishes, one connection each (the refusal closes it)
    const K: usize = 2; // rate-limit refusals, one connection each
    const F: usize = 2; // failed AUTHs
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let keys = Keys {
        writer: apikey::generate(),
        limited: apikey::generate(),
        reader: apikey::generate(),
    };
    policy(&pki, &keys, true);
    let gate = GateConfig::new(nsqd.tcp)
        .policy("metrics-policy")
        .auth("policy_reload_ms = 100")
        .table("[rate_limits]\non_limit = \"reject\"")
        .table(ADMIN)
        .start(&pki);
    let admin = gate.admin();
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let before = metrics(admin);

    // A subscriber first, so the N messages are delivered to it.
    let mut reader = RawClient::authenticated(gate.addr, &connector, &keys.reader).await;
    common::nsqclient::assert_ok(reader.sub("metrics.orders", "c").await, "SUB");
    reader.send(&Command::Rdy { count: 100 }).await;

    let mut writer = RawClient::authenticated(gate.addr, &connector, &keys.writer).await;
    for i in 0..N {
        let reply = writer
            .publish("metrics.orders", format!("m{i}").as_bytes())
            .await;
        common::nsqclient::assert_ok(reply, "PUB");
    }
    for _ in 0..N {
        let frame = reader.read_frame().await.expect("a message");
        let message = frame.message().expect("a message frame");
        reader.send(&Command::Fin { id: message.id }).await;
    }
    for _ in 0..M {
        let mut denied = RawClient::authenticated(gate.addr, &connector, &keys.writer).await;
        denied.publish("forbidden", b"x").await;
    }
    // Each limited connection publishes until refused (its first publish may be, too).
    let mut limited_acks = 0;
    for _ in 0..K {
        let mut limited = RawClient::authenticated(gate.addr, &connector, &keys.limited).await;
        loop {
            match limited.publish("metrics.limited", b"x").await {
                Some(frame) if frame.frame_type == FrameType::Response => limited_acks += 1,
                Some(frame) => {
                    let text = String::from_utf8_lossy(&frame.data).into_owned();
                    assert!(text.starts_with("E_PUB_FAILED"), "{text}");
                    break;
                }
                None => panic!("closed without a refusal"),
            }
        }
    }
    for i in 0..F {
        let (mut client, _) =
            RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
        let bad = format!("nsqk_{i}notakey");
        let reply = client.auth(&bad).await.expect("AUTH reply");
        assert_eq!(reply.frame_type, FrameType::Error);
    }
    // The reader's key goes: a revocation (after the subscriber's grace).
    policy(&pki, &keys, false);
    assert!(
        reader.closed_within(Duration::from_secs(10)).await,
        "reader not revoked"
    );
    drop(writer);

    let connections = (2 + M + K + F) as f64;
    let after = metrics_when(admin, "every session's ending", |m| {
        let ended = m.sum("nsqgate_sessions_ended_total", &[]);
        let open = m.sum("nsqgate_connections_open", &[("kind", "nsq")]);
        ended - before.sum("nsqgate_sessions_ended_total", &[]) >= connections && open == 0.0
    });
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let published = (N + limited_acks) as f64;
    assert_eq!(
        moved("nsqgate_messages_total", &[("direction", "to_nsqd")]),
        published
    );
    assert_eq!(
        moved("nsqgate_messages_total", &[("direction", "to_client")]),
        N as f64
    );
    let allowed = published + K as f64;
    let decisions = "nsqgate_decisions_total";
    assert_eq!(
        moved(decisions, &[("action", "publish"), ("outcome", "allow")]),
        allowed
    );
    assert_eq!(
        moved(decisions, &[("action", "publish"), ("outcome", "deny")]),
        M as f64
    );
    assert_eq!(
        moved(decisions, &[("action", "subscribe"), ("outcome", "allow")]),
        1.0
    );
    assert_eq!(moved("nsqgate_rate_limit_refusals_total", &[]), K as f64);
    assert_eq!(moved("nsqgate_revocations_total", &[]), 1.0);
    let auths = "nsqgate_authentications_total";
    let succeeded = (2 + M + K) as f64;
    assert_eq!(
        moved(auths, &[("method", "api_key"), ("outcome", "success")]),
        succeeded
    );
    assert_eq!(moved(auths, &[("outcome", "failure")]), F as f64);
    let ended = "nsqgate_sessions_ended_total";
    assert_eq!(moved(ended, &[("kind", "policy")]), M as f64);
    assert_eq!(moved(ended, &[("kind", "limit")]), K as f64);
    assert_eq!(moved(ended, &[("kind", "identity")]), (F + 1) as f64);
    assert_eq!(moved(ended, &[]), connections);
    let handshakes = "nsqgate_tls_handshakes_total";
    let client_tls = [("leg", "client"), ("outcome", "success")];
    assert_eq!(moved(handshakes, &client_tls), connections);
    assert!(moved("nsqgate_bytes_total", &[("direction", "to_nsqd")]) > 0.0);
    assert!(moved("nsqgate_bytes_total", &[("direction", "to_client")]) > 0.0);
    let round_trips = moved("nsqgate_publish_round_trip_seconds_count", &[]);
    assert_eq!(round_trips, published);
    assert!(
        moved("nsqgate_upstream_connect_duration_seconds_count", &[]) >= connections - F as f64
    );
    let nsq = [("kind", "nsq")];
    assert_eq!(
        moved("nsqgate_connections_accepted_total", &nsq),
        connections
    );
    assert_eq!(after.sum("nsqgate_connections_open", &nsq), 0.0);
    assert_eq!(after.sum("nsqgate_build_info", &[]), 1.0);
    assert!(
        after.sum(
            "nsqgate_certificate_expiry_timestamp_seconds",
            &[("certificate", "client")]
        ) > 1.7e9
    );
    assert_eq!(
        after.types["nsqgate_publish_round_trip_seconds"],
        "histogram"
    );
}

#[test]
fn healthz_answers_and_readyz_follows_nsqd_away_and_back() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp).table(ADMIN).start(&pki);
    let admin = gate.admin();
    assert_eq!(get(admin, "/healthz").0, 200);
    assert_eq!(get(admin, "/nothing").0, 404);
    let ready = readyz_becomes(admin, 200);
    assert_eq!(ready["ready"], true, "{ready}");

    let tcp = nsqd.tcp;
    let killed = nsqd.kill_keeping_data();
    let not_ready = readyz_becomes(admin, 503);
    assert_eq!(not_ready["ready"], false, "{not_ready}");
    let why = not_ready["not_ready"][format!("nsqd {tcp}")]
        .as_str()
        .unwrap_or_else(|| panic!("/readyz does not name nsqd {tcp}: {not_ready}"));
    assert!(why.starts_with("nsqd unavailable"), "{why}");
    let gauge = metrics(admin).sum("nsqgate_upstream_ready", &[("upstream", &tcp.to_string())]);
    assert_eq!(gauge, 0.0);

    let _nsqd = Nsqd::restart(killed);
    readyz_becomes(admin, 200);
    assert!(gate.log().contains("nsqd unavailable"), "{}", gate.log());
}

#[test]
fn promtool_finds_no_problem_in_the_exposition() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp).table(ADMIN).start(&pki);
    let (_, body) = get(gate.admin(), "/metrics");
    let promtool = common::prometheus::tool("promtool");
    let checked = common::prometheus::check_metrics(&promtool, &body);
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}",
        checked.report
    );
    assert!(
        checked.report.trim().is_empty(),
        "promtool check metrics:\n{}",
        checked.report
    );
}

#[test]
fn a_real_prometheus_scrapes_the_admin_listener() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp).table(ADMIN).start(&pki);
    let prometheus = common::prometheus::Prometheus::start(gate.admin());
    let series = prometheus.query_until_found("nsqgate_build_info");
    assert_eq!(
        series[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{series:?}"
    );
    let up = prometheus.query_until_found("up{job=\"nsqgate\"} == 1");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
}

#[test]
fn the_admin_listener_speaks_tls_with_its_own_client_ca() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    pki.issue_spiffe_client("scraper");
    let admin_tls = "[admin]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"gate.pem\"\n\
                     tls_key = \"gate.key\"\ntls_client_ca = \"ca.pem\"";
    let gate = GateConfig::anonymous(nsqd.tcp).table(admin_tls).start(&pki);
    let ca = pki.path("ca.pem");
    let cert = (pki.path("scraper.pem"), pki.path("scraper.key"));
    let with_cert = |path| common::prometheus::curl_tls(gate.admin(), path, &ca, Some(&cert));
    assert_eq!(with_cert("/healthz").0, 200);
    let (status, _) = common::prometheus::curl_tls(gate.admin(), "/healthz", &ca, None);
    assert_ne!(status, 200, "served without a client certificate");
    let (status, body) = with_cert("/metrics");
    assert_eq!(status, 200, "{body}");
    let failures =
        Exposition::parse(&body).sum("nsqgate_tls_handshake_failures_total", &[("leg", "client")]);
    assert!(failures >= 1.0, "{body}");
}

#[test]
fn a_refused_certificate_reload_is_counted_and_named_by_readyz_until_a_good_one() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp)
        .auth("policy_reload_ms = 100")
        .table(ADMIN)
        .start(&pki);
    let admin = gate.admin();
    readyz_becomes(admin, 200);
    let client = [("certificate", "client")];
    let expiry = "nsqgate_certificate_expiry_timestamp_seconds";
    let first = metrics(admin).sum(expiry, &client);

    std::fs::write(
        pki.path("gate.pem"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .unwrap();
    let broken = readyz_becomes(admin, 503);
    let why = broken["not_ready"]["client_tls"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("gate.pem"), "{broken}");
    let reloads = "nsqgate_reloads_total";
    let failed = [("what", "client_tls"), ("outcome", "failure")];
    assert_eq!(metrics(admin).sum(reloads, &failed), 1.0);
    assert_eq!(
        metrics(admin).sum(expiry, &client),
        first,
        "the old one is in force"
    );

    // A good certificate again: ready, the success counted, the expiry read from it.
    let next = pki
        .ca
        .issue_server("gate next", &["127.0.0.1".to_string()])
        .unwrap();
    pki.write("gate", &next);
    readyz_becomes(admin, 200);
    let succeeded = [("what", "client_tls"), ("outcome", "success")];
    let now = metrics_when(admin, "the reload's success", |m| {
        m.sum(reloads, &succeeded) >= 1.0
    });
    assert!(
        now.sum(expiry, &client) > 1.7e9,
        "{}",
        now.sum(expiry, &client)
    );
}
