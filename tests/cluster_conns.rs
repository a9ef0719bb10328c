//! Connection caps across replicas: a per-identity cap of 5 holds over three nsqgate
//! processes sharing one real redis-server; a slot given back on one replica is free on
//! another, and a replica killed with SIGKILL frees its slots within the lease time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::{Gate, GateConfig, Nsqd, Pki};

const CAP: usize = 5;
const LEASE_MS: u64 = 2000;

fn replica(pki: &Pki, nsqd: &Nsqd, redis: &Redis) -> Gate {
    GateConfig::new(nsqd.tcp)
        .auth("require_identity = true")
        .policy("policy")
        .table(&format!("[connections]\nmax_per_identity = {CAP}"))
        .table(&format!(
            "[cluster]\nredis_url = \"{}\"\ntimeout_ms = 500\nconnection_lease_ms = {LEASE_MS}",
            redis.url()
        ))
        .start(pki)
}

#[tokio::test]
async fn a_per_identity_cap_holds_across_replicas_and_a_killed_replica_frees_its_slots() {
    let redis = Redis::start();
    let pki = Pki::new();
    let key = pki.write_publisher_policy("c.*", "capped");
    let nsqd = Nsqd::start(&pki);
    let mut replicas: Vec<Gate> = (0..3).map(|_| replica(&pki, &nsqd, &redis)).collect();

    // Two on replica 1, two on replica 2, one on replica 3: the cap of 5 is reached.
    let mut held = Vec::new();
    for index in [0, 0, 1, 1, 2] {
        let client = pki.try_auth(&replicas[index], &key).await;
        held.push((index, client.expect("a slot under the cap")));
    }
    // Each replica alone holds at most 2 (under its local cap of 5): the sixth is refused by
    // the shared count wherever it lands.
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

    // One closed on replica 3 frees a slot that replica 1 can take.
    let (_, closed) = held.pop().expect("five held");
    drop(closed);
    let deadline = Instant::now() + Duration::from_secs(10);
    let taken = loop {
        match pki.try_auth(&replicas[0], &key).await {
            Ok(client) => break client,
            Err(text) => assert!(Instant::now() < deadline, "slot not given back: {text}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    held.push((0, taken));

    // Replica 1 (three slots now) is killed without a goodbye: its slots come back once its
    // lease ends, and replica 3 takes them.
    std::process::Command::new("kill")
        .args(["-KILL", &replicas[0].pid().to_string()])
        .status()
        .expect("kill");
    let killed_at = Instant::now();
    held.retain(|(index, _)| *index != 0);
    let victim = replicas.remove(0);
    let mut regained = Vec::new();
    let deadline = killed_at + Duration::from_millis(LEASE_MS) + Duration::from_secs(10);
    while regained.len() < 3 {
        match pki.try_auth(&replicas[1], &key).await {
            Ok(client) => regained.push(client),
            Err(text) => {
                assert!(Instant::now() < deadline, "slots not freed: {text}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!(
        "a killed replica's slots were free after {:?} (lease {LEASE_MS} ms)",
        killed_at.elapsed()
    );
    assert!(
        pki.try_auth(&replicas[0], &key).await.is_err(),
        "the cap holds again"
    );
    drop(victim);
}
