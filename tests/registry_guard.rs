//! Guarded registration with real processes: stock nsqlookupd on loopback behind nsqgate's
//! registration guard, stock nsqd registering through nsqgate sidecars. Legitimate nsqd appear
//! in nsqlookupd's `/nodes` and `/lookup` (asked directly); an nsqd without a certificate, one
//! with a certificate from another CA, and one with a valid certificate announcing another
//! host's address never do; a REGISTER for a topic its nsqd may not carry never reaches it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod registry_support;

use std::net::SocketAddr;

use common::{Lookupd, Nsqd, Pki};
use nsqgate::certs::{ClientSubject, DevCa};
use registry_support::{eventually, http, lookup, nodes, topics, RegistryGate};

/// The guard in front of `lookupd`: three identities, each with its own address and ports;
/// `nsqd-a` and `nsqd-b` may carry `orders.*`, `nsqd-c` anything.
fn guard_config(lookupd: &Lookupd) -> String {
    let grant = |name: &str, port: u16, topics: &str| {
        format!(
            "[[registry.guard.nsqd]]\nidentity = \"spiffe://nsqgate.test/{name}\"\n\
             broadcast_addresses = [\"{name}.test\"]\ntcp_port = {port}\nhttp_port = {}\n\
             topics = [{topics}]\n",
            port + 1
        )
    };
    format!(
        "[registry.guard]\nlisten = \"127.0.0.1:0\"\nnsqlookupd_tcp_address = \"{}\"\n\
         tls_cert = \"gate.pem\"\ntls_key = \"gate.key\"\ntls_client_ca = \"ca.pem\"\n\n{}{}{}",
        lookupd.tcp,
        grant("nsqd-a", 14150, "\"orders.*\""),
        grant("nsqd-b", 24150, "\"orders.*\""),
        grant("nsqd-c", 34150, "\"**\""),
    )
}

/// A sidecar relaying to `guard` with the certificate files `cert`.pem/.key.
fn sidecar(pki: &Pki, guard: SocketAddr, cert: &str) -> RegistryGate {
    let config = format!(
        "[registry.sidecar]\nlisten = \"127.0.0.1:0\"\nguard_address = \"{guard}\"\n\
         tls_server_name = \"localhost\"\ntls_ca = \"ca.pem\"\n\
         tls_cert = \"{cert}.pem\"\ntls_key = \"{cert}.key\"\n"
    );
    RegistryGate::start(pki, &config, "sidecar")
}

/// nsqd registering with the lookupd at `lookupd_tcp`, announcing `address` and `port`
/// (TCP) and `port + 1` (HTTP).
fn nsqd(pki: &Pki, lookupd_tcp: SocketAddr, address: &str, port: u16) -> Nsqd {
    Nsqd::start_with(
        pki,
        "nsqd",
        &[
            &format!("--lookupd-tcp-address={lookupd_tcp}"),
            &format!("--broadcast-address={address}"),
            &format!("--broadcast-tcp-port={port}"),
            &format!("--broadcast-http-port={}", port + 1),
        ],
    )
}

fn create_topic(nsqd: &Nsqd, topic: &str) {
    let (status, body) = http(nsqd.http, "POST", &format!("/topic/create?topic={topic}"));
    assert_eq!(status, 200, "create {topic}: {body}");
}

#[test]
fn only_certified_nsqd_register_what_they_may_and_nothing_else_reaches_nsqlookupd() {
    let pki = Pki::new();
    for name in ["nsqd-a", "nsqd-b", "nsqd-c"] {
        pki.issue_spiffe_client(name);
    }
    // nsqd-a's identity, signed by a CA the guard does not trust.
    let other_ca = DevCa::generate("another CA").expect("CA");
    let forged = other_ca
        .issue_client(&ClientSubject {
            common_name: "nsqd-a".into(),
            uris: vec!["spiffe://nsqgate.test/nsqd-a".into()],
            dns_names: Vec::new(),
        })
        .expect("forged cert");
    pki.write("forged-a", &forged);

    let lookupd = Lookupd::start();
    let guard = RegistryGate::start(&pki, &guard_config(&lookupd), "guard");
    let sidecar_a = sidecar(&pki, guard.addr, "nsqd-a");
    let sidecar_b = sidecar(&pki, guard.addr, "nsqd-b");
    let sidecar_c = sidecar(&pki, guard.addr, "nsqd-c");
    let sidecar_forged = sidecar(&pki, guard.addr, "forged-a");

    let nsqd_a = nsqd(&pki, sidecar_a.addr, "nsqd-a.test", 14150);
    let nsqd_b = nsqd(&pki, sidecar_b.addr, "nsqd-b.test", 24150);
    // Valid certificate, but announces nsqd-a's host.
    let _rogue_c = nsqd(&pki, sidecar_c.addr, "nsqd-a.test", 34150);
    // A certificate from another CA, through a sidecar.
    let _rogue_forged = nsqd(&pki, sidecar_forged.addr, "rogue-forged.test", 44150);
    // No certificate at all: straight to the guard, in plaintext as stock nsqd speaks.
    let _rogue_plain = nsqd(&pki, guard.addr, "rogue-plain.test", 54150);

    // Refused first, on the same connection as the allowed one after it: once orders.eu is
    // listed, the REGISTER of secret.plans has been judged.
    create_topic(&nsqd_a, "secret.plans");
    create_topic(&nsqd_a, "orders.eu");
    create_topic(&nsqd_b, "orders.us");

    let legitimate = [
        ("nsqd-a.test".to_owned(), 14150, 14151),
        ("nsqd-b.test".to_owned(), 24150, 24151),
    ];
    assert!(
        eventually(|| legitimate.iter().all(|n| nodes(lookupd.http).contains(n))),
        "the legitimate nsqd are not in /nodes: {:?}",
        nodes(lookupd.http)
    );
    assert!(
        eventually(|| lookup(lookupd.http, "orders.eu") == ["nsqd-a.test"]
            && lookup(lookupd.http, "orders.us") == ["nsqd-b.test"]),
        "/lookup: orders.eu {:?}, orders.us {:?}",
        lookup(lookupd.http, "orders.eu"),
        lookup(lookupd.http, "orders.us")
    );

    // The topic nsqd-a may not carry: refused and audited, never in nsqlookupd.
    guard.wait_audit("the refused REGISTER", |e| {
        e["outcome"] == "deny" && e["action"] == "registry" && e["topic"] == "secret.plans"
    });
    assert!(!topics(lookupd.http).contains(&"secret.plans".to_owned()));
    assert!(lookup(lookupd.http, "secret.plans").is_empty());

    // Each rogue was heard and refused by the guard.
    guard.wait_audit("nsqd-c announcing nsqd-a's host", |e| {
        e["outcome"] == "deny"
            && e["identity"] == "spiffe://nsqgate.test/nsqd-c"
            && e["reason"]
                .as_str()
                .unwrap_or("")
                .contains("broadcast_address \"nsqd-a.test\"")
    });
    guard.wait_audit("the certificate from another CA", |e| {
        e["outcome"] == "deny" && e["reason"].as_str().unwrap_or("").contains("UnknownIssuer")
    });
    sidecar_forged.wait_log("the forged sidecar", "registry sidecar: relay ended");
    guard.wait_audit("the plaintext nsqd", |e| {
        let reason = e["reason"].as_str().unwrap_or("");
        e["outcome"] == "deny"
            && reason.contains("TLS handshake")
            && !reason.contains("UnknownIssuer")
    });

    let mut listed = nodes(lookupd.http);
    listed.sort();
    assert_eq!(listed, legitimate, "/nodes holds only the legitimate nsqd");
}

#[test]
fn the_compose_stacks_registry_configs_check_out() {
    // No Docker engine here: the two registration-only files of docker-compose.yml load and
    // build their TLS set-ups against dev certificates made here (they name /certs/...).
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let (code, _, err) = common::nsqgate(&["certs", "dev", "--out", certs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let root = env!("CARGO_MANIFEST_DIR");
    for name in ["registry-guard", "registry-sidecar"] {
        let text = std::fs::read_to_string(format!("{root}/deploy/{name}.toml")).unwrap();
        let file = dir.path().join(format!("{name}.toml"));
        let text = text.replace("\"/certs/", &format!("\"{}/", certs.display()));
        std::fs::write(&file, text).unwrap();
        let (code, out, err) =
            common::nsqgate(&["check-config", "--config", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains(": ok"), "{name}: {out}");
        let compose = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
        assert!(compose.contains(&format!("./deploy/{name}.toml:/etc/nsqgate/{name}.toml:ro")));
    }
}

#[test]
fn a_registry_config_with_a_sidecar_off_loopback_or_no_role_is_refused_naming_the_key() {
    let pki = Pki::new();
    let cases = [
        (
            "[registry.sidecar]\nlisten = \"0.0.0.0:4160\"\nguard_address = \"g:4160\"\n\
             tls_server_name = \"g\"\ntls_ca = \"ca.pem\"\ntls_cert = \"gate.pem\"\n\
             tls_key = \"gate.key\"\n",
            "registry.sidecar.listen",
        ),
        ("[registry]\n", "registry"),
    ];
    for (config, key) in cases {
        let file = pki.path("bad-registry.toml");
        common::write_secret(&file, config.as_bytes());
        let (code, out, err) =
            common::nsqgate(&["check-config", "--config", file.to_str().unwrap()]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    }
}

#[tokio::test]
async fn an_identify_length_over_its_bound_is_refused_before_nsqlookupd_sees_anything() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = Pki::new();
    pki.issue_spiffe_client("nsqd-a");
    let lookupd = Lookupd::start();
    let guard = RegistryGate::start(&pki, &guard_config(&lookupd), "guard");
    let key = (pki.path("nsqd-a.pem"), pki.path("nsqd-a.key"));
    let connector = common::nsqclient::tls_connector(&pki.path("ca.pem"), Some((&key.0, &key.1)));
    let tcp = tokio::net::TcpStream::connect(guard.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    // nsqlookupd would allocate the 2 GiB this declares and wait for them; the guard
    // answers at once (well under its idle deadline, the bound here) and closes.
    tls.write_all(b"  V1IDENTIFY\n\x7f\xff\xff\xff")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tls.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "no answer: the guard waited for the body");
    let text = String::from_utf8_lossy(answer.get(4..).unwrap_or_default()).into_owned();
    assert!(
        text.starts_with("E_BAD_BODY IDENTIFY body of 2147483647 bytes is over the limit"),
        "{text:?}"
    );
    guard.wait_audit("the oversized IDENTIFY", |e| {
        e["outcome"] == "deny" && e["reason"].as_str().unwrap_or("").contains("2147483647")
    });
    assert!(nodes(lookupd.http).is_empty(), "{:?}", nodes(lookupd.http));
}

/// Sends `bytes` and reads one V1 response (4-byte length, data) as text.
async fn ask<S>(io: &mut S, bytes: &[u8]) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    io.write_all(bytes).await.unwrap();
    let mut size = [0u8; 4];
    io.read_exact(&mut size).await.unwrap();
    let mut data = vec![0u8; u32::from_be_bytes(size) as usize];
    io.read_exact(&mut data).await.unwrap();
    String::from_utf8_lossy(&data).into_owned()
}

#[tokio::test]
async fn beside_the_nsq_listeners_the_guard_ends_commands_out_of_order_and_counts_every_step() {
    use tokio::io::AsyncReadExt;

    let pki = Pki::new();
    pki.issue_spiffe_client("nsqd-a");
    let lookupd = Lookupd::start();
    let nsqd = Nsqd::start(&pki);
    // A full config: the NSQ listener and the admin listener beside the guard role.
    let gate = common::GateConfig::anonymous(nsqd.tcp)
        .table(&guard_config(&lookupd))
        .table("[admin]\nlisten = \"127.0.0.1:0\"")
        .start(&pki);
    let ready = std::fs::read_to_string(gate.config.with_extension("ready")).unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let guard: SocketAddr = ready["registry"]["guard"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let key = (pki.path("nsqd-a.pem"), pki.path("nsqd-a.key"));
    let connector = common::nsqclient::tls_connector(&pki.path("ca.pem"), Some((&key.0, &key.1)));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(guard).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.unwrap()
    };
    let identify = |address: &str| {
        let body = format!(
            "{{\"broadcast_address\":\"{address}\",\"tcp_port\":14150,\"http_port\":14151,\
             \"version\":\"1.3.0\"}}"
        );
        let mut bytes = b"IDENTIFY\n".to_vec();
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(body.as_bytes());
        bytes
    };

    // REGISTER before IDENTIFY: answered, then the connection ends.
    let mut early = connect().await;
    let answer = ask(&mut early, b"  V1REGISTER orders.eu\n").await;
    assert!(
        answer.starts_with("E_INVALID REGISTER before IDENTIFY"),
        "{answer}"
    );
    let mut rest = Vec::new();
    early.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    // In order: relayed; a refused REGISTER leaves the connection open; a second IDENTIFY
    // ends it.
    let mut nsqd_a = connect().await;
    let mut opening = b"  V1".to_vec();
    opening.extend(identify("nsqd-a.test"));
    let answer = ask(&mut nsqd_a, &opening).await;
    assert!(
        answer.starts_with('{'),
        "nsqlookupd's IDENTIFY answer: {answer}"
    );
    assert_eq!(ask(&mut nsqd_a, b"REGISTER orders.eu\n").await, "OK");
    let answer = ask(&mut nsqd_a, b"REGISTER secret.plans\n").await;
    assert!(
        answer.starts_with("E_UNAUTHORIZED topic \"secret.plans\""),
        "{answer}"
    );
    assert_eq!(ask(&mut nsqd_a, b"UNREGISTER orders.eu\n").await, "OK");
    assert_eq!(ask(&mut nsqd_a, b"REGISTER orders.eu\n").await, "OK");
    assert_eq!(lookup(lookupd.http, "orders.eu"), ["nsqd-a.test"]);
    let answer = ask(&mut nsqd_a, &identify("nsqd-a.test")).await;
    assert!(
        answer.starts_with("E_INVALID a second IDENTIFY"),
        "{answer}"
    );
    let mut rest = Vec::new();
    nsqd_a.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    gate.wait_audit("the accepted IDENTIFY", |e| {
        e["action"] == "registry_identify"
            && e["outcome"] == "allow"
            && e["identity"] == "spiffe://nsqgate.test/nsqd-a"
            && e["reason"] == "nsqd-a.test:14150/14151"
    });
    let (status, body) = common::prom::get(gate.admin(), "/metrics");
    assert_eq!(status, 200, "{body}");
    let m = common::prom::Exposition::parse(&body);
    let relayed = |command| {
        m.sum(
            "nsqgate_registry_commands_total",
            &[("role", "guard"), ("command", command)],
        )
    };
    assert_eq!(
        (
            relayed("IDENTIFY"),
            relayed("REGISTER"),
            relayed("UNREGISTER")
        ),
        (1.0, 2.0, 1.0)
    );
    let refused = |reason| {
        m.sum(
            "nsqgate_registry_refusals_total",
            &[("role", "guard"), ("reason", reason)],
        )
    };
    assert_eq!((refused("out_of_order"), refused("topic")), (2.0, 1.0));
}
