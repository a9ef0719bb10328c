//! nsqgate as stock nsqd's auth server (`[auth_service]`, issue 14 part 2), with real
//! processes: nsqd v1.3.0 started with `--auth-http-address` at nsqgate's auth listener, and
//! clients (a RawClient speaking its own bytes, stock to_nsq) connecting to nsqd directly,
//! never through the proxy. Every refusal here is nsqd's own: nsqgate only told it the grants.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::daemons::tool;
use common::nsqclient::{assert_error, assert_ok, tls_connector, RawClient};
use common::programs::run_tool;
use common::prom::{get, Exposition};
use common::{Gate, GateConfig, Nsqd, Pki};
use nsqgate::auth::apikey;

const POLICY_DIR: &str = "svc-policy";

/// `ingest` publishes to `orders.*` and its own `ingest.*`; `billing` subscribes to
/// `orders.*` on channel `billing` only; `carved` may publish to `logs.*` except
/// `logs.secret`, which nsqd cannot express, so nsqd is told nothing for `logs.*`; the JWT
/// identity `alice` is a writer.
fn write_policy(pki: &Pki, keys: &[(&str, &str, &str)]) {
    let mut text = String::from(
        r#"
wildcards = "segment"
[roles.writer]
allow = [{ action = "publish", topics = ["orders.*", "${identity}.*"] }]
[roles.reader]
allow = [{ action = "subscribe", topics = ["orders.*"], channels = ["billing"] }]
[roles.carved]
allow = [{ action = "publish", topics = ["logs.*", "plain"] }]
deny = [{ action = "publish", topics = ["logs.secret"] }]
[identities]
alice = ["writer"]
"#,
    );
    for (identity, key, role) in keys {
        let hash = common::key_sha256(key.as_bytes());
        text.push_str(&format!(
            "[api_keys.{identity}]\nsha256 = \"{hash}\"\nroles = [\"{role}\"]\n"
        ));
    }
    pki.write_policy(POLICY_DIR, "svc.toml", &text);
}

struct Fixture {
    pki: Pki,
    gate: Gate,
    nsqd: Nsqd,
    ingest: String,
    billing: String,
    carved: String,
}

/// The HS256 secret nsqgate verifies tokens with.
const JWT_SECRET: &str = "auth-service-tests-hs256-secret-0123456789";

fn start() -> Fixture {
    start_with(false)
}

/// nsqgate with the auth service (ttl 2 s, policy re-read every 200 ms, over HTTPS when
/// `https`), HS256 tokens and an admin listener, then nsqd asking it. nsqgate's own NSQ
/// listener points nowhere: nothing here goes through the proxy.
fn start_with(https: bool) -> Fixture {
    let pki = Pki::new();
    common::write_secret(&pki.path("jwt.secret"), JWT_SECRET.as_bytes());
    let (ingest, billing, carved) = (apikey::generate(), apikey::generate(), apikey::generate());
    write_policy(
        &pki,
        &[
            ("ingest", &ingest, "writer"),
            ("billing", &billing, "reader"),
            ("carved", &carved, "carved"),
        ],
    );
    let nowhere: SocketAddr = ([127, 0, 0, 1], 9).into();
    let tls = if https {
        "tls_cert = \"gate.pem\"\ntls_key = \"gate.key\""
    } else {
        ""
    };
    let gate = GateConfig::new(nowhere)
        .policy(POLICY_DIR)
        .auth("policy_reload_ms = 200")
        .table("[auth.jwt]\nkeys = [{ kid = \"hs\", algorithm = \"HS256\", secret_file = \"jwt.secret\" }]")
        .table(&format!("[auth_service]\nlisten = \"127.0.0.1:0\"\nttl_secs = 2\n{tls}"))
        .table("[admin]\nlisten = \"127.0.0.1:0\"")
        .start(&pki);
    let service = gate.auth_service.expect("nsqgate bound no auth service");
    let args = if https {
        vec![
            format!("--auth-http-address=https://{service}/auth"),
            format!("--tls-root-ca-file={}", pki.path("ca.pem").display()),
        ]
    } else {
        vec![format!("--auth-http-address={service}")]
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let nsqd = Nsqd::start_with(&pki, "nsqd", &args);
    Fixture {
        pki,
        gate,
        nsqd,
        ingest,
        billing,
        carved,
    }
}

impl Fixture {
    /// A direct connection to nsqd: TLS upgrade (nsqd requires it), then AUTH with `secret`.
    async fn client(&self, secret: &str) -> (RawClient, Option<common::wire::Frame>) {
        let connector = tls_connector(&self.pki.path("ca.pem"), None);
        let (mut client, identify) =
            RawClient::upgraded(self.nsqd.tcp, &connector, serde_json::json!({})).await;
        assert_eq!(
            identify["auth_required"], true,
            "nsqd asks for AUTH: {identify}"
        );
        let reply = client.auth(secret).await;
        (client, reply)
    }

    fn metrics(&self) -> Exposition {
        let (status, body) = get(self.gate.admin(), "/metrics");
        assert_eq!(status, 200, "{body}");
        Exposition::parse(&body)
    }
}

#[tokio::test]
async fn nsqd_enforces_the_gate_policy_itself() {
    let f = start();
    // AUTH at nsqd: nsqd asked nsqgate and says who the key is and how many grants it holds.
    let (mut writer, reply) = f.client(&f.ingest).await;
    let reply = reply.expect("AUTH reply");
    let json: serde_json::Value =
        serde_json::from_slice(&reply.data).unwrap_or_else(|_| panic!("{}", reply.text()));
    assert_eq!(json["identity"], "ingest", "{json}");
    assert_eq!(json["permission_count"], 2, "{json}");
    assert_ok(writer.publish("orders.new", b"one").await, "PUB orders.new");
    assert_ok(
        writer.publish("ingest.events", b"two").await,
        "PUB ingest.events",
    );
    let text = assert_error(
        writer.publish("other.events", b"x").await,
        "E_UNAUTHORIZED",
        "PUB other.events",
    );
    assert!(
        text.contains(r#"AUTH failed for PUB on "other.events" """#),
        "{text}"
    );
    // Anchored: `orders.*` does not reach into a longer name, nor does the namespace leak.
    for topic in ["orders.new.deeper", "xorders.new", "ingest.a.b"] {
        let (mut client, _) = f.client(&f.ingest).await;
        assert_error(client.publish(topic, b"x").await, "E_UNAUTHORIZED", topic);
    }
    // What nsqd holds: only the allowed topics exist, with their messages.
    assert_eq!(f.nsqd.message_count("orders.new"), 1);
    assert_eq!(f.nsqd.message_count("ingest.events"), 1);
    for refused in [
        "other.events",
        "orders.new.deeper",
        "xorders.new",
        "ingest.a.b",
    ] {
        assert!(!f.nsqd.topic_exists(refused), "nsqd created {refused}");
    }

    // Subscribing: the reader's channel only, and no publishing with a subscribe grant.
    let (mut reader, reply) = f.client(&f.billing).await;
    assert!(reply.is_some_and(|r| !r.text().starts_with("E_")));
    assert_ok(reader.sub("orders.new", "billing").await, "SUB billing");
    let (mut other, _) = f.client(&f.billing).await;
    assert_error(
        other.sub("orders.new", "audit").await,
        "E_UNAUTHORIZED",
        "SUB audit",
    );
    let (mut other, _) = f.client(&f.billing).await;
    assert_error(
        other.publish("orders.new", b"x").await,
        "E_UNAUTHORIZED",
        "PUB as reader",
    );
    let stats = f.nsqd.topic("orders.new").expect("orders.new in /stats");
    let clients = &stats["channels"][0]["clients"];
    assert_eq!(stats["channels"][0]["channel_name"], "billing", "{stats}");
    assert_eq!(clients[0]["authed"], true, "{stats}");
    assert_eq!(clients[0]["auth_identity"], "billing", "{stats}");

    // A deny inside a wildcard: nsqd cannot express it, so the wildcard is not granted.
    let (mut carved, _) = f.client(&f.carved).await;
    assert_ok(carved.publish("plain", b"x").await, "PUB plain");
    assert_error(
        carved.publish("logs.app", b"x").await,
        "E_UNAUTHORIZED",
        "PUB logs.app",
    );
    let omitted = f.gate.wait_audit("the left-out grant", |e| {
        e["action"] == "nsqd_auth" && e["reason"].as_str().is_some_and(|r| r.contains("left out"))
    });
    assert!(
        omitted["reason"]
            .as_str()
            .unwrap()
            .contains("roles.carved.deny[0]"),
        "{omitted}"
    );

    // An unknown key: nsqd's "not authorized", not an auth server failure.
    let (_, reply) = f.client(&apikey::generate()).await;
    let text = assert_error(reply, "E_UNAUTHORIZED", "AUTH unknown key");
    assert!(text.contains("AUTH no authorizations found"), "{text}");

    let metrics = f.metrics();
    let requests = |outcome| {
        metrics.sum(
            "nsqgate_auth_service_requests_total",
            &[("outcome", outcome)],
        )
    };
    assert!(
        requests("granted") >= 8.0,
        "granted {}",
        requests("granted")
    );
    assert_eq!(requests("refused"), 1.0);
    // At least once: nsqd may have asked again for `carved` after the 2 s ttl.
    assert!(metrics.sum("nsqgate_auth_service_grants_omitted_total", &[]) >= 1.0);
}

#[tokio::test]
async fn more_auths_than_the_service_serves_at_once_all_get_answers() {
    let f = start();
    // nsqd asks again for every client connection, over a new HTTP connection it then leaves
    // idle for 90 s; the service serves 64 connections at once, so it must not keep them alive.
    for n in 0..80 {
        let (_client, reply) = f.client(&f.ingest).await;
        let reply = reply.unwrap_or_else(|| panic!("AUTH {n}: no reply"));
        assert!(
            reply.text().contains("\"identity\":\"ingest\""),
            "AUTH {n}: {}",
            reply.text()
        );
    }
    let answered = f.metrics().sum("nsqgate_auth_service_requests_total", &[]);
    assert!(answered >= 80.0, "{answered} answers for 80 AUTHs");
}

#[tokio::test]
async fn a_removed_key_stops_working_at_nsqd_within_the_ttl() {
    let f = start();
    let (mut writer, reply) = f.client(&f.ingest).await;
    assert!(reply.is_some_and(|r| !r.text().starts_with("E_")));
    assert_ok(writer.publish("orders.a", b"before").await, "PUB before");
    // The key leaves the policy; nsqgate re-reads it, and nsqd asks again after its ttl.
    write_policy(&f.pki, &[("billing", &f.billing, "reader")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f.gate.log().contains("policy reloaded") {
        assert!(
            Instant::now() < deadline,
            "no policy reload: {}",
            f.gate.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let refusal = loop {
        let reply = writer.publish("orders.a", b"again").await;
        match reply {
            Some(frame) if frame.is_ok() => {}
            other => break other,
        }
        assert!(
            Instant::now() < deadline,
            "nsqd still takes the removed key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = assert_error(refusal, "E_UNAUTHORIZED", "PUB after removal");
    assert!(
        text.contains(r#"AUTH failed for PUB on "orders.a" """#),
        "{text}"
    );
    // A new connection with the removed key is not authorized at all.
    let (_, reply) = f.client(&f.ingest).await;
    assert_error(reply, "E_UNAUTHORIZED", "AUTH removed key");
}

#[test]
fn stock_to_nsq_with_an_api_key_publishes_only_where_allowed() {
    let f = start();
    let to_nsq = |topic: &str| {
        let args = vec![
            format!("--topic={topic}"),
            format!("--nsqd-tcp-address={}", f.nsqd.tcp),
            "--producer-opt=tls_v1,true".to_string(),
            format!(
                "--producer-opt=tls_root_ca_file,{}",
                f.pki.path("ca.pem").display()
            ),
            format!("--producer-opt=auth_secret,{}", f.ingest),
        ];
        run_tool(&tool("to_nsq"), &args, b"a\nb\n", Duration::from_secs(30))
    };
    let (ok, _, stderr) = to_nsq("orders.tool");
    assert!(ok, "to_nsq to orders.tool: {stderr}");
    assert_eq!(f.nsqd.message_count("orders.tool"), 2);
    let (ok, _, stderr) = to_nsq("elsewhere");
    assert!(!ok, "to_nsq published to elsewhere");
    assert!(stderr.contains("E_UNAUTHORIZED"), "{stderr}");
    assert!(!f.nsqd.topic_exists("elsewhere"));
}

/// An HS256 token for `sub`, valid for `secs` seconds.
fn token(sub: &str, secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({ "sub": sub, "iat": now, "exp": now + secs });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("hs".into());
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[tokio::test]
async fn over_https_a_jwt_gets_its_identity_namespace_at_nsqd() {
    let f = start_with(true);
    let (mut alice, reply) = f.client(&token("alice", 600)).await;
    let reply = reply.expect("AUTH reply");
    assert!(!reply.text().starts_with("E_"), "{}", reply.text());
    assert_ok(alice.publish("alice.inbox", b"x").await, "PUB alice.inbox");
    assert_ok(alice.publish("orders.jwt", b"x").await, "PUB orders.jwt");
    assert_error(
        alice.publish("bob.inbox", b"x").await,
        "E_UNAUTHORIZED",
        "PUB bob.inbox",
    );
    // A token whose signature is not nsqgate's is not authorized.
    let mut forged = token("alice", 600);
    forged.truncate(forged.rfind('.').unwrap());
    forged.push_str(".AAAA");
    let (_, reply) = f.client(&forged).await;
    assert_error(reply, "E_UNAUTHORIZED", "AUTH forged token");
    let audit = f.gate.wait_audit("the forged token", |e| {
        e["action"] == "nsqd_auth" && e["outcome"] == "failure"
    });
    assert!(
        audit["reason"].as_str().unwrap().contains("bad signature"),
        "{audit}"
    );
    let metrics = f.metrics();
    let https = [("kind", "auth_service_https")];
    assert!(metrics.sum("nsqgate_connections_accepted_total", &https) >= 1.0);
}

#[test]
fn malformed_requests_get_a_status_not_an_answer() {
    let f = start();
    let service = f.gate.auth_service.unwrap();
    assert_eq!(get(service, "/auth?tls=true&remote_ip=1.2.3.4").0, 400);
    assert_eq!(get(service, "/auth?secret=a&secret=b").0, 400);
    assert_eq!(get(service, "/other?secret=a").0, 404);
    // Longer than a whole AUTH body (16 KiB) percent-encoded: refused before any look-up.
    let long = format!("/auth?secret={}", "a".repeat(52_000));
    assert_eq!(get(service, &long).0, 414);
    let (status, body) = get(service, "/auth?secret=nsqk_unknown");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["authorizations"], serde_json::json!([]), "{json}");
    assert!(json["ttl"].as_u64().unwrap() >= 1, "{json}");
    let metrics = f.metrics();
    let bad = [("outcome", "bad_request")];
    assert_eq!(
        metrics.sum("nsqgate_auth_service_requests_total", &bad),
        4.0
    );
}
