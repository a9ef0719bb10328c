//! The session opening against real nsqd: IDENTIFY refusals identical to nsqd's (with and
//! without an nsqd connection behind the client, with nsqd's ranges learned or configured),
//! what nsqd learns about a client before its certificate is verified, bounded bodies and
//! memory before a client has an identity, and no nsqd connection for idle anonymous clients.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::nsqclient::{assert_ok, frame_text, tls_connector, RawClient};
use common::wire::{Command, Frame, FrameType};
use common::{run_tool, tool, Gate, GateConfig, Nsqd, Pki};
use nsqgate::certs::ClientSubject;
use serde_json::{json, Value};

/// nsqgate in front of `nsqd` with `rest` after `[upstream]` (`upstream` lines inside it).
fn gate(pki: &Pki, nsqd: &Nsqd, upstream: &str, rest: &str) -> Gate {
    GateConfig::new(nsqd.tcp)
        .upstream(upstream)
        .table(rest)
        .start(pki)
}

/// Clients must AUTH: no nsqd connection until they do.
const MUST_AUTH: &str = "[auth]\nrequire_identity = true\npolicy_dir = \"open-policy\"\n";
/// Anonymous clients allowed; client certificates optional (they name the client).
const ANONYMOUS_OR_CERT: &str = "[auth]\nrequire_identity = false\npolicy_dir = \"open-policy\"\n";

/// Sends magic and an IDENTIFY with `body` (plain TCP, or TLS from the first byte with a
/// client certificate) and returns the first frame back.
async fn identify(
    addr: SocketAddr,
    body: &[u8],
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Frame {
    let mut client = match tls {
        Some(connector) => RawClient::tls_first(addr, connector).await,
        None => RawClient::plain(addr).await,
    };
    client
        .send(&Command::Identify {
            body: body.to_vec().into(),
        })
        .await;
    client.read_frame().await.expect("a reply to IDENTIFY")
}

/// "E_CODE text" for an error frame, "accepted" for anything else.
fn outcome(frame: &Frame) -> String {
    match frame.frame_type {
        FrameType::Error => frame_text(frame),
        _ => "accepted".into(),
    }
}

/// Every IDENTIFY field nsqd checks, with a value it refuses (and a few bodies it cannot read).
fn refused_cases() -> Vec<(&'static str, String)> {
    let field = |name: &'static str, value: &str| (name, format!(r#""{name}":{value}"#));
    vec![
        field("heartbeat_interval", "100"),
        field("heartbeat_interval", "999"),
        field("heartbeat_interval", "60001"),
        field("heartbeat_interval", "-2"),
        field("output_buffer_timeout", "24"),
        field("output_buffer_timeout", "30001"),
        field("output_buffer_timeout", "-2"),
        field("output_buffer_size", "63"),
        field("output_buffer_size", "65537"),
        field("output_buffer_size", "-2"),
        field("sample_rate", "-1"),
        field("sample_rate", "100"),
        field("msg_timeout", "999"),
        field("msg_timeout", "900001"),
        field("msg_timeout", "-1"),
        (
            "HEARTBEAT_INTERVAL (any case)",
            r#""HEARTBEAT_INTERVAL":100"#.into(),
        ),
        field("heartbeat_interval", r#""1000""#),
        field("msg_timeout", "1.5"),
        field("sample_rate", "2147483648"),
        field("tls_v1", r#""yes""#),
        field("client_id", "5"),
        field("deflate_level", "true"),
        ("snappy+deflate", r#""snappy":true,"deflate":true"#.into()),
    ]
}

#[tokio::test]
async fn identify_refusals_are_nsqds_own_with_and_without_an_nsqd_connection() {
    let pki = Pki::new();
    pki.issue_client(
        "client",
        &ClientSubject {
            common_name: "alice".into(),
            uris: vec![],
            dns_names: vec![],
        },
    );
    let nsqd = Nsqd::start(&pki);
    let must_auth = gate(&pki, &nsqd, "", MUST_AUTH);
    let anonymous_gate = gate(&pki, &nsqd, "", ANONYMOUS_OR_CERT);
    // A client certificate at the TLS handshake: the nsqd connection opens at IDENTIFY.
    let connected = GateConfig::new(nsqd.tcp)
        .client("tls_client_ca = \"ca.pem\"\nclient_cert = \"optional\"")
        .table(MUST_AUTH)
        .start(&pki);
    let cert = tls_connector(
        &pki.path("ca.pem"),
        Some((&pki.path("client.pem"), &pki.path("client.key"))),
    );

    let mut table = vec![format!(
        "| field | value | nsqd | nsqgate, no nsqd connection yet (AUTH) | (anonymous) | nsqgate, nsqd connected (certificate) |"
    )];
    table.push("|---|---|---|---|---|---|".into());
    for (name, pair) in refused_cases() {
        let body = format!(r#"{{"feature_negotiation":true,"tls_v1":true,{pair}}}"#);
        let direct = identify(nsqd.tcp, body.as_bytes(), None).await;
        assert_eq!(direct.frame_type, FrameType::Error, "nsqd accepted {body}");
        let deferred = identify(must_auth.addr, body.as_bytes(), None).await;
        let anonymous = identify(anonymous_gate.addr, body.as_bytes(), None).await;
        let relayed = identify(connected.addr, body.as_bytes(), Some(&cert)).await;
        let value = pair.split_once(':').map_or("", |(_, v)| v).to_owned();
        table.push(format!(
            "| {name} | `{value}` | `{}` | `{}` | `{}` | `{}` |",
            outcome(&direct),
            outcome(&deferred),
            outcome(&anonymous),
            outcome(&relayed)
        ));
        for (how, frame) in [
            ("without an nsqd connection (AUTH)", &deferred),
            ("without an nsqd connection (anonymous)", &anonymous),
            ("with an nsqd connection", &relayed),
        ] {
            assert_eq!(
                frame.raw,
                direct.raw,
                "{body} {how}: nsqgate said {:?}, nsqd {:?}",
                frame_text(frame),
                frame_text(&direct)
            );
        }
    }
    eprintln!("{}", table.join("\n"));
}

#[test]
fn go_nsq_with_a_100ms_heartbeat_hears_nsqds_reason() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    for rest in [MUST_AUTH, ANONYMOUS_OR_CERT] {
        let gate = gate(&pki, &nsqd, "", rest);
        let args = vec![
            "--topic=hb".to_string(),
            format!("--nsqd-tcp-address={}", gate.addr),
            "--producer-opt=tls_v1,true".to_string(),
            format!(
                "--producer-opt=tls_root_ca_file,{}",
                pki.path("ca.pem").display()
            ),
            "--producer-opt=heartbeat_interval,100ms".to_string(),
            "--producer-opt=auth_secret,unused".to_string(),
        ];
        let (ok, _, stderr) = run_tool(&tool("to_nsq"), &args, b"x\n", Duration::from_secs(30));
        assert!(!ok, "to_nsq published with a 100 ms heartbeat");
        assert!(
            stderr.contains("E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid"),
            "{rest}: {stderr}"
        );
    }
}

#[tokio::test]
async fn ranges_are_learned_from_nsqd_or_configured_and_a_mismatch_is_relayed_and_logged() {
    let pki = Pki::new();
    // An nsqd with wider heartbeats and output buffers than the defaults.
    let wide = Nsqd::start_with(
        &pki,
        "nsqd",
        &[
            "--max-heartbeat-interval=2m",
            "--max-output-buffer-size=131072",
        ],
    );
    let http_front = format!(
        "{MUST_AUTH}\n[http.nsqd]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\nupstream_tls = false\n",
        wide.http
    );
    let learned = gate(&pki, &wide, "", &http_front);
    let configured = gate(
        &pki,
        &wide,
        "[upstream.nsqd_options]\nmax_heartbeat_interval_ms = 120000\nmax_output_buffer_size = 131072",
        MUST_AUTH,
    );
    for body in [
        r#"{"tls_v1":true,"feature_negotiation":true,"heartbeat_interval":90000,"output_buffer_size":100000}"#,
        r#"{"heartbeat_interval":120001}"#,
        r#"{"output_buffer_size":131073}"#,
    ] {
        let direct = outcome(&identify(wide.tcp, body.as_bytes(), None).await);
        for (how, gate) in [("learned", &learned), ("configured", &configured)] {
            let through = outcome(&identify(gate.addr, body.as_bytes(), None).await);
            assert_eq!(through, direct, "{body}, ranges {how}");
        }
    }

    // An nsqd with narrower heartbeats than nsqgate believes: nsqgate accepts, nsqd refuses
    // once the connection opens (at AUTH), and the client hears nsqd's words.
    let narrow = Nsqd::start_with(&pki, "nsqd", &["--max-heartbeat-interval=10s"]);
    let key = nsqgate::auth::apikey::generate();
    pki.write_policy("keys", "keys.toml", &key_policy(&key));
    let unaware = gate(
        &pki,
        &narrow,
        "",
        "[auth]\nrequire_identity = true\npolicy_dir = \"keys\"\n",
    );
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut client, _) = RawClient::upgraded(
        unaware.addr,
        &connector,
        json!({"heartbeat_interval": 20000}),
    )
    .await;
    let frame = client.auth(&key).await.expect("nsqd's refusal");
    assert_eq!(
        frame_text(&frame),
        "E_BAD_BODY IDENTIFY heartbeat interval (20000) is invalid"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !unaware
        .log()
        .contains("nsqd refused an IDENTIFY that nsqgate accepted")
    {
        assert!(Instant::now() < deadline, "the mismatch is logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A policy granting everything to one API key.
fn key_policy(key: &str) -> String {
    let hash = common::key_sha256(key.as_bytes());
    format!(
        r#"
[roles.everything]
allow = [
  {{ action = "publish", topics = ["*"] }},
  {{ action = "subscribe", topics = ["*"], channels = ["*"] }},
]

[api_keys.tester]
sha256 = "{hash}"
roles = ["everything"]
"#
    )
}

/// The nsqd /stats entry of the one client subscribed to `topic`/`channel`.
fn subscriber_stats(nsqd: &Nsqd, topic: &str, channel: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = nsqd.stats();
        let client = stats["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["topic_name"] == topic)
            .flat_map(|t| t["channels"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["channel_name"] == channel)
            .flat_map(|c| c["clients"].as_array().cloned().unwrap_or_default())
            .next();
        if let Some(client) = client {
            return client;
        }
        assert!(Instant::now() < deadline, "no subscriber in nsqd's /stats");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn nsqd_sees_nsqgates_metadata_unless_forwarding_is_chosen() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let client_metadata = json!({
        "client_id": "secret-client",
        "hostname": "secret-host.example",
        "user_agent": "secret-agent/1.0",
        "sample_rate": 5,
    });
    for (forward, channel) in [(false, "default"), (true, "forwarded")] {
        // The default is tested by leaving the key out.
        let upstream = if forward {
            "forward_client_metadata = true"
        } else {
            ""
        };
        let gate = gate(&pki, &nsqd, upstream, ANONYMOUS_OR_CERT);
        let (mut client, _) =
            RawClient::upgraded(gate.addr, &connector, client_metadata.clone()).await;
        assert_ok(client.sub("meta", channel).await, "SUB");
        let seen = subscriber_stats(&nsqd, "meta", channel);
        let fields = (&seen["client_id"], &seen["hostname"], &seen["user_agent"]);
        if forward {
            assert_eq!(
                fields,
                (
                    &json!("secret-client"),
                    &json!("secret-host.example"),
                    &json!("secret-agent/1.0")
                ),
                "{seen}"
            );
        } else {
            assert_eq!(seen["client_id"], "nsqgate", "{seen}");
            assert!(
                seen["user_agent"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("nsqgate/"),
                "{seen}"
            );
            assert!(!seen.to_string().contains("secret"), "{seen}");
        }
        assert_eq!(
            seen["sample_rate"], 5,
            "the client's settings still apply: {seen}"
        );
    }
}

#[tokio::test]
async fn auth_and_identify_bodies_are_bounded_before_they_are_read() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = gate(&pki, &nsqd, "", MUST_AUTH);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    // Declared above max_auth_size (16 KiB by default), no body sent: refused at once.
    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
    client.send_raw(b"AUTH\n\x00\x00\x40\x01").await;
    let frame = client
        .read_frame_within(Duration::from_secs(5))
        .await
        .expect("a refusal before any body byte");
    assert_eq!(
        frame_text(&frame),
        "E_BAD_BODY AUTH body too big 16385 > 16384"
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);

    let mut client = RawClient::plain(gate.addr).await;
    client.send_raw(b"IDENTIFY\n\x00\x01\x00\x00").await;
    let frame = client
        .read_frame_within(Duration::from_secs(5))
        .await
        .expect("a refusal before any body byte");
    assert_eq!(
        frame_text(&frame),
        "E_BAD_BODY IDENTIFY body too big 65536 > 16384"
    );
}

#[tokio::test]
async fn unauthenticated_connections_share_one_memory_budget() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let rest = format!("{MUST_AUTH}\n[limits]\nmax_unauthenticated_memory = 65536\n");
    let gate = gate(&pki, &nsqd, "", &rest);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    // Each holds a half-sent maximal AUTH; the budget covers a few of them, not all.
    let mut holding = Vec::new();
    let mut refused = None;
    for _ in 0..8 {
        let (mut client, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
        client.send_raw(b"AUTH\n\x00\x00\x40\x00").await;
        client.send_raw(&[b'x'; 8192]).await;
        if let Some(frame) = client.read_frame_within(Duration::from_secs(2)).await {
            refused = Some(frame_text(&frame));
            break;
        }
        holding.push(client);
    }
    let refused = refused.expect("the budget refused a connection");
    assert!(
        refused.starts_with("E_BAD_BODY") && refused.contains("budget for unauthenticated"),
        "{refused}"
    );
    assert!(
        !holding.is_empty() && holding.len() < 8,
        "{} held",
        holding.len()
    );

    // Budget given back when they leave: a newcomer gets its AUTH read again.
    drop(holding);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (mut client, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
        client.send_raw(b"AUTH\n\x00\x00\x40\x00").await;
        client.send_raw(&[b'x'; 16384]).await;
        let frame = client.read_frame().await.expect("an AUTH reply");
        if frame_text(&frame) == "E_AUTH_FAILED AUTH failed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused: {}",
            frame_text(&frame)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// nsqgate's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Not an assertion: prints nsqgate's RSS with 500 unauthenticated connections, each in the
/// middle of an AUTH declaring the largest body (and then 500 declaring 5 MiB, refused).
#[tokio::test]
async fn report_rss_with_500_unauthenticated_connections() {
    const CONNECTIONS: usize = 500;
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = gate(&pki, &nsqd, "", MUST_AUTH);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (warm, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
    drop(warm);
    let before = rss_kib(gate.pid());
    let mut holding = Vec::new();
    for _ in 0..CONNECTIONS {
        let (mut client, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
        client.send_raw(b"AUTH\n\x00\x00\x40\x00").await;
        client.send_raw(&[b'x'; 16000]).await;
        holding.push(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = rss_kib(gate.pid());
    let mut refused = 0;
    for _ in 0..CONNECTIONS {
        // A huge declaration: refused from its length, nothing read.
        let (mut other, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
        other.send_raw(b"AUTH\n\x00\x50\x00\x00").await;
        if other
            .read_frame_within(Duration::from_secs(5))
            .await
            .is_some()
        {
            refused += 1;
        }
    }
    drop(holding);
    let after = rss_kib(gate.pid());
    eprintln!(
        "nsqgate RSS: {before} KiB idle; {held} KiB with {CONNECTIONS} connections each holding 16,000 bytes of a 16 KiB AUTH ({:.1} KiB per connection); {after} KiB after {refused} more declared 5 MiB AUTH bodies (refused unread)",
        (held.saturating_sub(before)) as f64 / CONNECTIONS as f64
    );
    assert!(nsqd.stats()["topics"].as_array().is_some());
}

#[tokio::test]
async fn anonymous_clients_that_only_identify_hold_no_nsqd_connection() {
    const CLIENTS: usize = 20;
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = gate(&pki, &nsqd, "", ANONYMOUS_OR_CERT);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let nsqd_fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", nsqd.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // The first client makes nsqgate learn nsqd's IDENTIFY defaults (one short connection).
    let mut idle = vec![
        RawClient::upgraded(gate.addr, &connector, json!({}))
            .await
            .0,
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = nsqd_fds();
    // Wait for that probe's descriptor to be gone.
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = nsqd_fds();
        if now == before {
            break;
        }
        before = now;
    }
    for _ in 1..CLIENTS {
        let (client, reply) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
        assert_eq!(reply["auth_required"], false, "{reply}");
        idle.push(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = nsqd_fds();
    assert!(
        after <= before,
        "nsqd descriptors {before} -> {after}: {CLIENTS} anonymous clients that only IDENTIFYed reached nsqd"
    );

    // Kept alive as nsqd would: heartbeats come, answered with NOP.
    let (mut last, _) =
        RawClient::upgraded(gate.addr, &connector, json!({"heartbeat_interval": 1000})).await;
    for _ in 0..3 {
        let frame = last
            .read_raw_frame_within(Duration::from_secs(10))
            .await
            .expect("a heartbeat from nsqgate");
        assert!(frame.is_heartbeat(), "{}", frame_text(&frame));
        last.send(&Command::Nop).await;
    }
    assert!(nsqd_fds() <= before, "a heartbeat needs no nsqd connection");

    // The first command nsqd must see opens the connection, and it works as usual.
    let ok = last.publish("anonymous", b"x").await.expect("PUB reply");
    assert_eq!(&ok.data[..], b"OK", "{}", frame_text(&ok));
    assert_eq!(nsqd.message_count("anonymous"), 1);
    assert!(
        nsqd_fds() > after,
        "the publishing client has its nsqd connection"
    );
}
