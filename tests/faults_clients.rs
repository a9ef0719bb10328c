//! Faults around nsqgate that are not nsqd's: a client that disconnects in the middle of an
//! MPUB body (nothing of it lands, and nsqgate lets go of its nsqd connection), and nsqlookupd
//! down (discovery through nsqgate fails with a 5xx and a JSON body; the TCP path is
//! unaffected). Real processes throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod claims_support;
mod common;

use std::time::{Duration, Instant};

use serde_json::json;

use claims_support::https;
use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::mpub_bytes;
use common::{GateConfig, Lookupd, Nsqd, Pki};

/// Client connections nsqd has open (producers and consumers).
fn nsqd_clients(nsqd: &Nsqd) -> usize {
    nsqd.stats()["producers"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_client_gone_in_the_middle_of_an_mpub_body_publishes_none_of_it() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp).start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let messages: [&[u8]; 3] = [b"first whole message", b"second", b"third"];
    let wire = mpub_bytes("cut", &messages);
    // Cut after the size, after the count, inside the first message, between messages, and
    // one byte short of the end.
    let header = "MPUB cut\n".len();
    let cuts = [
        header + 4,
        header + 8,
        header + 16,
        header + 8 + 4 + 19 + 2,
        wire.len() - 1,
    ];
    for cut in cuts {
        let (mut client, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
        let ok = client.publish("cut", b"whole PUB").await.expect("a reply");
        assert!(ok.is_ok(), "{}", frame_text(&ok));
        client.send_raw(&wire[..cut]).await;
        drop(client);
    }
    // nsqgate closes each nsqd connection it opened for them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while nsqd_clients(&nsqd) > 0 {
        assert!(
            Instant::now() < deadline,
            "nsqd still has clients: {}",
            nsqd.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        nsqd.message_count("cut"),
        cuts.len() as u64,
        "only the whole PUBs"
    );
    // nsqd never saw a partial MPUB (it would have logged failing to read its body).
    let log = std::fs::read_to_string(nsqd.data.path().join("nsqd.log")).unwrap();
    assert!(!log.contains("MPUB"), "nsqd saw MPUB bytes:\n{log}");
}

#[tokio::test]
async fn with_nsqlookupd_down_discovery_fails_cleanly_and_tcp_carries_on() {
    let pki = Pki::new();
    let lookupd = Lookupd::start();
    let register = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let nsqd = Nsqd::start_with(&pki, "nsqd", &[&register, "--broadcast-address=127.0.0.1"]);
    let gate = GateConfig::anonymous(nsqd.tcp)
        .table(&format!(
            "[http.lookupd]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n\n\
             [[http.lookupd.nodes]]\nbroadcast_address = \"127.0.0.1\"\ntcp_port = {}\n\
             http_port = {}\ngate_address = \"127.0.0.1\"\ngate_tcp_port = {}\ngate_http_port = 4151",
            lookupd.http,
            nsqd.tcp.port(),
            nsqd.http.port(),
            nsqd.tcp.port(),
        ))
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let front = gate.http("nsqlookupd");
    let (mut producer, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
    let ok = producer.publish("found", b"1").await.expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));
    // nsqd registers the topic with nsqlookupd in the background.
    let deadline = Instant::now() + Duration::from_secs(30);
    let lookup = loop {
        let (status, body) = https(front, &connector, "GET", "/lookup?topic=found", &[], b"")
            .await
            .unwrap();
        if status == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "/lookup never found the topic: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(lookup.contains("producers"), "{lookup}");

    drop(lookupd);
    for path in ["/lookup?topic=found", "/nodes", "/topics"] {
        let (status, body) = https(front, &connector, "GET", path, &[], b"")
            .await
            .unwrap();
        assert!((500..600).contains(&status), "{path}: {status} {body}");
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        assert!(json.is_object(), "{path}: {json}");
    }
    // The TCP path does not need nsqlookupd: the live producer and a new one both publish.
    let ok = producer.publish("found", b"2").await.expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));
    let (mut another, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
    let ok = another.publish("found", b"3").await.expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));
    assert_eq!(nsqd.message_count("found"), 3);
}
