//! Certificate identities and the HTTP front across replicas sharing one real redis-server:
//! a client certificate's identity (no AUTH) takes a slot in the per-identity cap over every
//! replica, and the nsqd HTTPS front checks every request against the cluster's revocations:
//! a revoked API key (bearer) and a revoked certificate identity get 401 on `/pub` at every
//! replica; an HTTP request holds a slot in its identity's shared cap while it runs. Real
//! redis-server, nsqd and nsqgate binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod cluster_support;
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::StatusCode;

use cluster_support::{
    certificate_client, held_request, publish, replica_config, revoke, two_replicas, write_policy,
    SENSOR,
};
use common::redis::Redis;
use common::{GateConfig, Nsqd, Pki};

const CAP: usize = 2;
const NOTICE: Duration = Duration::from_secs(10);

/// The shared per-identity cap of [`CAP`] on `redis`.
fn capped(nsqd: &Nsqd, redis: &Redis) -> GateConfig {
    replica_config(
        nsqd,
        &redis.url(),
        Some(&format!("max_per_identity = {CAP}")),
    )
}

#[tokio::test]
async fn a_certificate_identity_takes_a_shared_slot_in_its_cap() {
    let redis = Redis::start();
    let pki = Pki::new();
    write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let config = capped(&nsqd, &redis);
    let replicas = two_replicas(&config, &pki);

    // One on each replica: the shared cap of 2 is reached, though each holds 1 of a local 2.
    let mut held = Vec::new();
    for gate in &replicas {
        held.push(certificate_client(gate, &pki).await.expect("under the cap"));
    }
    for gate in &replicas {
        let refused = certificate_client(gate, &pki)
            .await
            .err()
            .expect("over the shared cap");
        // It never sent AUTH: told as a refused nsqd connection is, not "AUTH failed".
        assert_eq!(
            refused,
            "E_IDENTIFY_FAILED nsqgate refused: too many connections for this identity \
             (all replicas)"
        );
    }
    // A closed one gives its slot back to the other replica.
    drop(held.pop());
    let deadline = Instant::now() + NOTICE;
    while let Err(text) = certificate_client(&replicas[0], &pki).await {
        assert!(Instant::now() < deadline, "slot not given back: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_http_front_refuses_revoked_keys_and_certificates_at_every_replica() {
    let redis = Redis::start();
    let pki = Pki::new();
    let key = write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let config = capped(&nsqd, &redis).http_nsqd(nsqd.https);
    let replicas = two_replicas(&config, &pki);
    let fronts: Vec<SocketAddr> = replicas.iter().map(|g| g.http("nsqd")).collect();

    for &front in &fronts {
        assert_eq!(publish(&pki, front, "cc.key", Some(&key)).await, 200);
        assert_eq!(publish(&pki, front, "cc.cert", None).await, 200);
    }
    assert_eq!(nsqd.message_count("cc.key"), 2);
    assert_eq!(nsqd.message_count("cc.cert"), 2);

    revoke(&redis, &["--api-key-name", "ingest"]);
    revoke(&redis, &["--identity", SENSOR]);
    let revoked_at = Instant::now();
    for &front in &fronts {
        for bearer in [Some(key.as_str()), None] {
            loop {
                let status = publish(&pki, front, "cc.after", bearer).await;
                if status == StatusCode::UNAUTHORIZED {
                    break;
                }
                assert_eq!(status, 200);
                assert!(revoked_at.elapsed() < NOTICE, "still served after revoke");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    eprintln!(
        "HTTP /pub refused at both replicas {:?} after the revocations",
        revoked_at.elapsed()
    );
}

#[tokio::test]
async fn http_requests_count_against_the_shared_identity_cap() {
    let redis = Redis::start();
    let pki = Pki::new();
    let key = write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let config = capped(&nsqd, &redis).http_nsqd(nsqd.https);
    let replicas = two_replicas(&config, &pki);
    let fronts: Vec<SocketAddr> = replicas.iter().map(|g| g.http("nsqd")).collect();

    // One unfinished request per replica holds the identity's two shared slots; each replica
    // alone holds 1 of its local 2, so only the shared count can refuse the next one.
    let mut held = vec![
        held_request(&pki, fronts[0], &key).await,
        held_request(&pki, fronts[1], &key).await,
    ];
    // A replica claims a held request's slot once it has read the head, on its own time: both
    // must hold theirs before the next request, or that one may take a slot first and leave a
    // held request refused (seen once on a loaded machine).
    let deadline = Instant::now() + NOTICE;
    while shared_count(&redis, &identity_key("ingest")) < 2 {
        assert!(
            Instant::now() < deadline,
            "the held requests never held their slots"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + NOTICE;
    loop {
        let status = publish(&pki, fronts[0], "cc.more", Some(&key)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "the shared cap never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Closing one gives its slot back.
    drop(held.pop());
    let deadline = Instant::now() + NOTICE;
    loop {
        let status = publish(&pki, fronts[0], "cc.more", Some(&key)).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "slot not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The open connections Redis counts for `key` over every replica (its hash of counts by
/// replica).
fn shared_count(redis: &Redis, key: &str) -> u64 {
    let reply = redis.command(&format!("HVALS {{nsqgate:{key}}}"));
    (reply.lines())
        .filter(|line| !line.starts_with(['*', '$']))
        .map(|count| count.parse::<u64>().unwrap_or_else(|_| panic!("{reply:?}")))
        .sum()
}

fn identity_key(identity: &str) -> String {
    format!("conns:identity:{}:{identity}", identity.len())
}

#[tokio::test]
async fn an_auth_after_a_certificate_gives_the_certificate_identitys_slot_back() {
    let redis = Redis::start();
    let pki = Pki::new();
    let key = write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let config = capped(&nsqd, &redis);
    let replicas = two_replicas(&config, &pki);
    let sensor = identity_key(SENSOR);

    // A certificate client takes the sensor's slot, then AUTHs with the API key: the
    // connection is the key's now, and the sensor's slot is given back.
    let mut switched = certificate_client(&replicas[0], &pki).await.unwrap();
    assert_eq!(shared_count(&redis, &sensor), 1);
    let reply = switched.auth(&key).await.expect("AUTH reply");
    assert!(reply.text().starts_with('{'), "{}", reply.text());
    let deadline = Instant::now() + NOTICE;
    while shared_count(&redis, &sensor) != 0 {
        assert!(
            Instant::now() < deadline,
            "the sensor's slot was kept after AUTH"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shared_count(&redis, &identity_key("ingest")), 1);
    // Both of the sensor's slots are free: one certificate client on each replica.
    let mut held = Vec::new();
    for gate in &replicas {
        held.push(certificate_client(gate, &pki).await.expect("a free slot"));
    }
    assert_eq!(shared_count(&redis, &sensor), 2);
    assert_eq!(
        publish_ok(&mut switched).await,
        "OK",
        "still served as the key"
    );
}

async fn publish_ok(client: &mut common::nsqclient::RawClient) -> String {
    let reply = client.publish("cc.after", b"m").await.expect("a PUB reply");
    reply.text()
}

/// A TLS connection to an HTTPS front, or why it failed (closed at once over a cap).
async fn tls_to(pki: &Pki, addr: SocketAddr) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connector = tokio_rustls::TlsConnector::from(cluster_support::client_tls(pki, false));
    match connector.connect(name, tcp).await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn the_http_fronts_hold_a_per_ip_cap_over_every_replica() {
    let redis = Redis::start();
    let pki = Pki::new();
    let key = write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let config = replica_config(&nsqd, &redis.url(), Some(&format!("max_per_ip = {CAP}")))
        .http_nsqd(nsqd.https);
    let replicas = two_replicas(&config, &pki);
    let fronts: Vec<SocketAddr> = replicas.iter().map(|g| g.http("nsqd")).collect();

    // One unfinished request per replica: 127.0.0.1 holds both shared slots, though each
    // replica holds 1 of its local 2, so only the shared count can refuse the next one.
    let mut held = vec![
        held_request(&pki, fronts[0], &key).await,
        held_request(&pki, fronts[1], &key).await,
    ];
    assert_eq!(shared_count(&redis, "conns:ip:127.0.0.1"), 2);
    for &front in &fronts {
        let refused = tls_to(&pki, front).await.expect_err("over the shared cap");
        eprintln!("third connection at {front}: {refused}");
    }
    // Closing one gives its slot back, to either replica.
    drop(held.pop());
    let deadline = Instant::now() + NOTICE;
    while let Err(refused) = tls_to(&pki, fronts[0]).await {
        assert!(Instant::now() < deadline, "slot not given back: {refused}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
