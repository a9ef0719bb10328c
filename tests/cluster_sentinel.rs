//! `[cluster] redis_sentinels`: the shared state on the master a Redis Sentinel names (a real
//! master, its `--replicaof` replica and a `redis-server --sentinel`). Two nsqgate replicas in
//! `closed` mode (so nothing is let through on local counts alone, and a Redis they cannot
//! write to shows as "shared state unavailable", not as a cap) keep one per-identity cap
//! between them and hear `nsqgate revoke --config`; after `SENTINEL FAILOVER`, and again after
//! the new master is killed, they find the next master through the sentinel and go on
//! sharing, without a restart. Real redis-server, nsqd and nsqgate binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use common::nsqclient::RawClient;
use common::redis_sentinel::{RedisSentinel, MASTER};
use common::{nsqgate, revoke_api_key_everywhere, Gate, GateConfig, Nsqd, Pki};

const CAP: usize = 2;
/// A failover takes the sentinel a few seconds; the replicas notice within one re-read.
const NOTICE: Duration = Duration::from_secs(30);
const OVER_CAP: &str =
    "E_AUTH_FAILED AUTH failed: too many connections for this identity (all replicas)";

/// AUTH until served (closed mode: once Redis gave the connection its slot).
async fn served(gate: &Gate, pki: &Pki, key: &str, what: &str) -> RawClient {
    let deadline = Instant::now() + NOTICE;
    loop {
        match pki.try_auth(gate, key).await {
            Ok(client) => return client,
            Err(text) => assert!(Instant::now() < deadline, "{what}: never served: {text}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every replica refuses the key for the shared cap (not for an unavailable
/// Redis: that needs Redis to answer the claim).
async fn over_the_cap_everywhere(replicas: &[Gate], pki: &Pki, key: &str, what: &str) {
    for gate in replicas {
        let deadline = Instant::now() + NOTICE;
        loop {
            match pki.try_auth(gate, key).await {
                Err(text) if text == OVER_CAP => break,
                Err(text) => assert!(Instant::now() < deadline, "{what}: {text}"),
                Ok(_) => panic!("{what}: served over the shared cap"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn write_policy(pki: &Pki) -> String {
    pki.write_publisher_policy("rs.*", "capped")
}

#[tokio::test]
async fn replicas_follow_the_master_through_sentinel_failovers() {
    let mut set = RedisSentinel::start();
    let pki = Pki::new();
    let key = write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let config = GateConfig::new(nsqd.tcp)
        .auth("require_identity = true")
        .policy("policy")
        // No per-address cap (1024 by default): a client is refused only at AUTH, in words.
        .table(&format!(
            "[connections]\nmax_per_identity = {CAP}\nmax_per_ip = 0"
        ))
        .table(&format!(
            "[cluster]\nredis_sentinels = [\"{}\"]\nsentinel_master = \"{MASTER}\"\n\
             timeout_ms = 1000\non_unavailable = \"closed\"",
            set.sentinel_address()
        ));
    let replicas = [config.start(&pki), config.start(&pki)];
    let config_path = pki.path("replica.toml");
    config.write(&config_path);
    let first = set.master_port();

    // Through the first master: one connection per replica fills the shared cap.
    let mut held = vec![
        served(&replicas[0], &pki, &key, "first").await,
        served(&replicas[1], &pki, &key, "second").await,
    ];
    over_the_cap_everywhere(&replicas, &pki, &key, "before the failover").await;

    // The sentinel promotes the replica: the counts went with it (replicated), and the
    // replicas write to the new master (the old one now refuses writes: -READONLY).
    let second = set.failover();
    eprintln!("failover: master {first} -> {second}");
    over_the_cap_everywhere(&replicas, &pki, &key, "after the failover").await;
    drop(held.pop());
    held.push(
        served(
            &replicas[1],
            &pki,
            &key,
            "a slot given back after the failover",
        )
        .await,
    );
    over_the_cap_everywhere(&replicas, &pki, &key, "full again").await;
    for gate in &replicas {
        let port = format!("master=127.0.0.1:{second}");
        gate.wait_log(&["Redis master found through Sentinel", &port]);
    }

    // The new master dies: the sentinel promotes the first one back.
    set.server_mut(second).kill();
    let deadline = Instant::now() + NOTICE;
    while set.master_port() != first {
        assert!(
            Instant::now() < deadline,
            "the sentinel never promoted {first} again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("master {second} killed; master {first} again");
    drop(held);
    served(&replicas[0], &pki, &key, "slots after the kill").await;

    // A revocation through the sentinel reaches both replicas, and sits on the master.
    revoke_api_key_everywhere(&pki, &config_path, "capped", &key, &replicas, NOTICE).await;
    let stored = set.server(first).command("ZRANGE nsqgate:revocations 0 -1");
    assert!(stored.contains("capped"), "{stored}");
}

/// `check-config` on a `[cluster]` table: exit code, stderr, and the file's line that sets
/// `key` (0 when absent).
fn check(pki: &Pki, cluster: &str, key: &str) -> (i32, String, usize) {
    let config = GateConfig::anonymous("127.0.0.1:1".parse().unwrap())
        .table(&format!("[cluster]\n{cluster}"));
    let path = pki.path("check.toml");
    config.write(&path);
    let (code, _out, err) = nsqgate(&["check-config", "--config", path.to_str().unwrap()]);
    let short = key.trim_start_matches("cluster.");
    let line = (config.toml().lines())
        .position(|l| l.starts_with(&format!("{short} =")))
        .map_or(0, |i| i + 1);
    (code, err, line)
}

#[test]
fn sentinels_are_checked_and_named_alone() {
    let pki = Pki::new();
    let good = "redis_sentinels = [\"127.0.0.1:26379\"]\nsentinel_master = \"main\"";
    let (code, err, _) = check(&pki, good, "");
    assert_eq!(code, 0, "{err}");

    let cases = [
        (
            "redis_url = \"redis://127.0.0.1:6379\"\nredis_sentinels = [\"127.0.0.1:26379\"]",
            "cluster.redis_sentinels",
            "not both",
        ),
        (
            "redis_sentinels = [\"127.0.0.1:26379\"]",
            "cluster.sentinel_master",
            "required with redis_sentinels",
        ),
        (
            "sentinel_master = \"main\"",
            "cluster.sentinel_master",
            "needs redis_sentinels",
        ),
        (
            "sentinel_master = \"main\"\nredis_sentinels = []",
            "cluster.redis_sentinels",
            "names no sentinel",
        ),
        (
            "sentinel_master = \"main\"\nredis_sentinels = [\"rediss://127.0.0.1:26379\"]",
            "cluster.redis_sentinels",
            "TLS to Sentinel is not supported",
        ),
    ];
    for (cluster, key, words) in cases {
        let (code, err, line) = check(&pki, cluster, key);
        assert_ne!(code, 0, "{cluster}: accepted");
        assert!(err.contains(key) && err.contains(words), "{cluster}: {err}");
        assert!(err.contains("check.toml"), "names the file: {err}");
        if line > 0 {
            assert!(
                err.contains(&format!("line {line}")),
                "names line {line}: {err}"
            );
        }
    }
}
