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
    certificate_client, held_request, publish, replica_config, revoke, write_policy, SENSOR,
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
    let replicas = [config.start(&pki), config.start(&pki)];

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
    let replicas = [config.start(&pki), config.start(&pki)];
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
    let replicas = [config.start(&pki), config.start(&pki)];
    let fronts: Vec<SocketAddr> = replicas.iter().map(|g| g.http("nsqd")).collect();

    // One unfinished request per replica holds the identity's two shared slots; each replica
    // alone holds 1 of its local 2, so only the shared count can refuse the next one.
    let mut held = vec![
        held_request(&pki, fronts[0], &key).await,
        held_request(&pki, fronts[1], &key).await,
    ];
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
