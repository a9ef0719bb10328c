//! `[connections] workers`: connections run on that many threads, each with its own event loop,
//! each accepting its own connections (one `SO_REUSEPORT` socket per worker). 45 producers on a
//! gate with three workers: each worker thread (named `nsqgate-wN` in /proc) has run some of
//! them, every publish reached nsqd; `workers = 0` is refused naming the key. The real binary
//! and nsqd.
//!
//! The kernel picks a worker's socket by a hash of each connection's 4-tuple, not in turn: a
//! worker gets none of 45 connections with probability (2/3)^45, so one of three does with
//! probability at most 3 * (2/3)^45, about 4e-8.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::collections::BTreeMap;

use common::nsqclient::{tls_connector, RawClient};
use common::{nsqgate, write_secret, GateConfig, Nsqd, Pki};

/// Producers at once, and the connections each opens one after another.
const AT_ONCE: usize = 3;
const EACH: usize = 15;
const PUBLISHES: usize = 10;

/// CPU time in nanoseconds of each of `pid`'s threads whose name starts with `prefix`, from
/// /proc's schedstat (the first field is the time spent on a CPU). Not stat's utime and stime:
/// those count 10 ms clock ticks, and a fast machine runs a worker's share of this test in less
/// than one (CI saw `0 -> 0` for a worker that did run).
fn thread_cpu_ns(pid: u32, prefix: &str) -> BTreeMap<String, u64> {
    let mut threads = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let name = name.trim().to_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let schedstat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_else(|error| {
            panic!(
                "{}/schedstat: {error}: this test needs a kernel with CONFIG_SCHED_INFO",
                dir.display()
            )
        });
        let on_cpu = schedstat.split(' ').next().unwrap().parse::<u64>().unwrap();
        threads.insert(name, on_cpu);
    }
    threads
}

#[tokio::test]
async fn connections_are_spread_over_the_configured_workers() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp)
        .table("[connections]\nworkers = 3")
        .start(&pki);
    let before = thread_cpu_ns(gate.pid(), "nsqgate-w");
    let names: Vec<&String> = before.keys().collect();
    assert_eq!(
        names,
        ["nsqgate-w0", "nsqgate-w1", "nsqgate-w2"],
        "{before:?}"
    );

    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut producers = Vec::new();
    for n in 0..AT_ONCE {
        let connector = connector.clone();
        let addr = gate.addr;
        producers.push(tokio::spawn(async move {
            for _ in 0..EACH {
                let (mut client, _) =
                    RawClient::upgraded(addr, &connector, serde_json::json!({})).await;
                for _ in 0..PUBLISHES {
                    let reply = client
                        .publish("spread", format!("from {n}").as_bytes())
                        .await;
                    common::nsqclient::assert_ok(reply, "PUB");
                }
            }
        }));
    }
    for producer in producers {
        producer.await.unwrap();
    }
    let published = AT_ONCE * EACH * PUBLISHES;
    assert_eq!(nsqd.message_count("spread"), published as u64);
    // Each worker accepted and ran some producers' TLS handshakes and relays: none stayed idle.
    let after = thread_cpu_ns(gate.pid(), "nsqgate-w");
    for (name, on_cpu) in &after {
        assert!(
            *on_cpu > before[name],
            "{name} never ran: {before:?} -> {after:?}"
        );
    }
}

#[test]
fn zero_workers_is_refused_naming_the_key() {
    let pki = Pki::new();
    let config = GateConfig::anonymous("127.0.0.1:1".parse().unwrap())
        .table("[connections]\nworkers = 0")
        .toml();
    let path = pki.path("zero.toml");
    write_secret(&path, config.as_bytes());
    let (code, out, err) = nsqgate(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("connections.workers"), "{err}");
    assert!(err.contains("must be from 1 to 1024"), "{err}");
}
