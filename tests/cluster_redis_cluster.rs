//! `[cluster] redis_cluster_nodes`: the shared state in a real Redis Cluster (three
//! redis-server masters joined by `redis-cli --cluster create`). Two nsqgate replicas in
//! `closed` mode (so nothing is let through on local counts alone) keep one per-identity
//! connection cap between them, whose count and leases live in one hash slot, and
//! `nsqgate revoke --config` reaches both through the cluster. Real redis-server, nsqd and
//! nsqgate binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use common::redis_cluster::RedisCluster;
use common::{nsqgate, revoke_api_key_everywhere, GateConfig, Nsqd, Pki};

const CAP: usize = 3;

#[tokio::test]
async fn replicas_share_caps_and_revocations_through_a_redis_cluster() {
    let redis = RedisCluster::start();
    let pki = Pki::new();
    let key = pki.write_publisher_policy("rc.*", "capped");
    let nodes: Vec<String> = redis.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let nsqd = Nsqd::start(&pki);
    let config = GateConfig::new(nsqd.tcp)
        .auth("require_identity = true")
        .policy("policy")
        .table(&format!("[connections]\nmax_per_identity = {CAP}"))
        .table(&format!(
            "[cluster]\nredis_cluster_nodes = [{}]\ntimeout_ms = 1000\non_unavailable = \"closed\"",
            nodes.join(", ")
        ));
    let replicas = [config.start(&pki), config.start(&pki)];

    // Closed mode: a connection is served only once Redis gave it its shared slots.
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        match pki.try_auth(&replicas[0], &key).await {
            Ok(client) => break client,
            Err(text) => assert!(Instant::now() < deadline, "never served: {text}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut held = vec![first];
    held.push(pki.try_auth(&replicas[1], &key).await.expect("slot 2"));
    held.push(pki.try_auth(&replicas[1], &key).await.expect("slot 3"));
    for gate in &replicas {
        let refused = pki
            .try_auth(gate, &key)
            .await
            .err()
            .expect("over the shared cap");
        assert_eq!(
            refused,
            "E_AUTH_FAILED AUTH failed: too many connections for this identity (all replicas)"
        );
    }
    // The count and its leases sit on one node (one hash slot); say where.
    let owners: Vec<usize> = (0..3)
        .filter(|node| {
            let keys = redis.command(*node, "KEYS *conns:identity*");
            keys.contains("conns:identity")
        })
        .collect();
    eprintln!("identity count held by node(s) {owners:?}");
    assert_eq!(owners.len(), 1);

    // Closing them frees the slots (the key is served again); then a revocation through the
    // cluster makes both replicas refuse it.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(text) = pki.try_auth(&replicas[0], &key).await {
        assert!(Instant::now() < deadline, "slots not given back: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config_path = pki.path("replica.toml");
    config.write(&config_path);
    revoke_api_key_everywhere(
        &pki,
        &config_path,
        "capped",
        &key,
        &replicas,
        Duration::from_secs(10),
    )
    .await;
}

#[test]
fn one_redis_or_a_cluster_is_named_not_both() {
    let pki = Pki::new();
    let config = GateConfig::anonymous("127.0.0.1:1".parse().unwrap()).table(
        "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n\
         redis_cluster_nodes = [\"redis://127.0.0.1:7000\"]",
    );
    let path = pki.path("check.toml");
    config.write(&path);
    let (code, out, err) = nsqgate(&["check-config", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("cluster.redis_cluster_nodes") && err.contains("not both"),
        "{err}"
    );
}
