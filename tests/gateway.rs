//! Gateway mode (one nsqgate listener per known nsqd, discovery through nsqgate) and the edge
//! producer pool, against real nsqd, nsqlookupd and nsq_tail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::nsqclient::{assert_ok, tls_connector, RawClient};
use common::{run_tool, tool, Gate, GateConfig, Lookupd, Nsqd, Pki};

const KEY: &str = "nsqk_gateway_test_key_0000000000000000000000000000";

fn policy() -> String {
    format!(
        r#"
[roles.gw]
allow = [
  {{ action = "publish", topics = ["gw*", "pool"] }},
  {{ action = "subscribe", topics = ["gw*"], channels = ["*", "tail*#ephemeral"] }},
]

[api_keys.gw-client]
sha256 = "{}"
roles = ["gw"]
"#,
        common::key_sha256(KEY.as_bytes())
    )
}

fn nsqd_pub(nsqd: &Nsqd, topic: &str, body: &str) {
    let mut stream = TcpStream::connect(nsqd.http).unwrap();
    write!(
        stream,
        "POST /pub?topic={topic} HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
}

#[test]
fn nsq_tail_discovers_through_nsqgate_and_reaches_every_nsqd_only_through_it() {
    let lookupd = Lookupd::start();
    let register = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let args = [register.as_str(), "--broadcast-address=127.0.0.1"];
    let pki = Pki::new();
    pki.write_policy("gw-policy", "gw.toml", &policy());
    let first = Nsqd::start_with(&pki, "nsqd", &args);
    let second = Nsqd::start_with(&pki, "nsqd", &args);
    for (nsqd, name) in [(&first, "first"), (&second, "second")] {
        for i in 0..5 {
            nsqd_pub(nsqd, "gw", &format!("{name}-{i}"));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while lookupd.producers("gw") < 2 {
        assert!(Instant::now() < deadline, "the nsqd never registered");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Two nsqgate processes with one policy: `gate` has a listener per nsqd; `discovery`
    // runs the lookupd front that maps each nsqd to its `gate` listener (whose port is only
    // known once `gate` has bound it).
    let gate = GateConfig::new(first.tcp)
        .policy("gw-policy")
        .table(&format!(
            "[[nodes]]\nlisten = \"127.0.0.1:0\"\nnsqd_tcp_address = \"{}\"",
            second.tcp
        ))
        .start(&pki);
    let (port_a, port_b) = (gate.nsq[0].port(), gate.nsq[1].port());
    let node = |nsqd: &Nsqd, gate_port: u16| {
        format!(
            "[[http.lookupd.nodes]]\nbroadcast_address = \"127.0.0.1\"\ntcp_port = {}\nhttp_port = {}\ngate_address = \"127.0.0.1\"\ngate_tcp_port = {gate_port}\ngate_http_port = {gate_port}\n",
            nsqd.tcp.port(),
            nsqd.http.port()
        )
    };
    let discovery = GateConfig::new(first.tcp)
        .policy("gw-policy")
        .table(&format!(
            "[http.lookupd]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"",
            lookupd.http
        ))
        .table(&node(&first, port_a))
        .table(&node(&second, port_b))
        .start(&pki);
    let front = discovery.http("nsqlookupd").port();

    // Stock nsq_tail, told only about nsqgate's lookupd front. Go's HTTP client trusts the dev
    // CA through SSL_CERT_FILE; the consumer options set TLS and the API key (which go-nsq
    // also sends to lookupd as a bearer token).
    let ca = pki.path("ca.pem").display().to_string();
    let tail_args = vec![
        "--topic=gw".to_string(),
        format!("--lookupd-http-address=https://127.0.0.1:{front}"),
        "-n=10".to_string(),
        "--consumer-opt=tls_v1,true".to_string(),
        format!("--consumer-opt=tls_root_ca_file,{ca}"),
        format!("--consumer-opt=auth_secret,{KEY}"),
    ];
    std::env::set_var("SSL_CERT_FILE", &ca);
    let (ok, stdout, stderr) =
        run_tool(&tool("nsq_tail"), &tail_args, b"", Duration::from_secs(60));
    assert!(
        ok,
        "nsq_tail failed: {stderr}\n--- gate ---\n{}",
        gate.log()
    );
    let mut received: Vec<String> = String::from_utf8_lossy(&stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    received.sort();
    let mut expected: Vec<String> = (0..5)
        .flat_map(|i| [format!("first-{i}"), format!("second-{i}")])
        .collect();
    expected.sort();
    assert_eq!(received, expected);

    // nsq_tail only ever knew nsqgate's addresses; both of its nsqd connections were
    // subscriptions authorized by nsqgate, one on each listener's nsqd.
    let subscribes: Vec<_> = gate
        .audit_events()
        .into_iter()
        .filter(|e| e["action"] == "subscribe" && e["outcome"] == "allow")
        .collect();
    assert_eq!(subscribes.len(), 2, "{subscribes:?}");
    assert!(stderr.contains(&format!("127.0.0.1:{port_a}")), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port_b}")), "{stderr}");
    assert!(
        !stderr.contains(&first.tcp.to_string()),
        "direct nsqd address leaked: {stderr}"
    );
    assert!(
        !stderr.contains(&second.tcp.to_string()),
        "direct nsqd address leaked: {stderr}"
    );
}

/// nsqgate with `first` behind [client], `second` behind a node, and a producer pool over
/// both; the gate and the pool's address.
fn start_pool(pki: &Pki, first: &Nsqd, second: &Nsqd) -> (Gate, SocketAddr) {
    let gate = GateConfig::new(first.tcp)
        .policy("gw-policy")
        .table(&format!(
            "[[nodes]]\nlisten = \"127.0.0.1:0\"\nnsqd_tcp_address = \"{}\"",
            second.tcp
        ))
        .table("[producer_pool]\nlisten = \"127.0.0.1:0\"\nhealth_check_ms = 200")
        .start(pki);
    // Listeners in config order: [client], the node, the pool.
    let pool = gate.nsq[2];
    (gate, pool)
}

#[tokio::test]
async fn producer_pool_spreads_connections_and_skips_a_dead_nsqd() {
    let pki = Pki::new();
    pki.write_policy("gw-policy", "gw.toml", &policy());
    let first = Nsqd::start(&pki);
    let mut second = Nsqd::start(&pki);
    let (_gate, pool) = start_pool(&pki, &first, &second);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let producer = || async {
        let (mut client, _) = RawClient::upgraded(pool, &connector, serde_json::json!({})).await;
        client.auth(KEY).await.unwrap();
        client
    };

    // Four producers held open: least-connections puts two on each nsqd.
    let mut held = Vec::new();
    for i in 0..4 {
        let mut client = producer().await;
        assert_ok(
            client.publish("pool", format!("p{i}").as_bytes()).await,
            "PUB",
        );
        held.push(client);
    }
    assert_eq!(first.message_count("pool"), 2);
    assert_eq!(second.message_count("pool"), 2);

    // One nsqd dies: its producers see their connections end (nothing acked is lost), and
    // new producers all go to the one that is left.
    second.terminate();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut ended = 0;
    for client in &mut held {
        if client.publish("pool", b"after").await.is_none() {
            ended += 1;
        }
    }
    assert_eq!(
        ended, 2,
        "the two producers on the dead nsqd see their connection end"
    );
    for i in 0..3 {
        let mut client = producer().await;
        assert_ok(
            client.publish("pool", format!("n{i}").as_bytes()).await,
            "PUB",
        );
    }
    assert_eq!(first.message_count("pool"), 2 + 2 + 3);
}

#[tokio::test]
async fn producer_pool_breaks_ties_in_turn() {
    let pki = Pki::new();
    pki.write_policy("gw-policy", "gw.toml", &policy());
    let first = Nsqd::start(&pki);
    let second = Nsqd::start(&pki);
    let (_gate, pool) = start_pool(&pki, &first, &second);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    // Producers one at a time: each finds both nsqd idle, so only the tie-break chooses.
    let producers = |nsqd: &Nsqd| nsqd.stats()["producers"].as_array().map_or(0, Vec::len);
    for i in 0..4 {
        let (mut client, _) = RawClient::upgraded(pool, &connector, serde_json::json!({})).await;
        client.auth(KEY).await.unwrap();
        assert_ok(
            client.publish("gw-turns", format!("p{i}").as_bytes()).await,
            "PUB",
        );
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(10);
        while producers(&first) + producers(&second) > 0 {
            assert!(
                Instant::now() < deadline,
                "nsqgate kept its nsqd connection"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(first.message_count("gw-turns"), 2);
    assert_eq!(second.message_count("gw-turns"), 2);
}
