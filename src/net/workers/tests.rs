#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use tokio::task::JoinSet;

use super::*;

/// The name of the thread a task ran on, sent back to the test.
async fn thread_name(tx: tokio::sync::mpsc::UnboundedSender<String>) {
    let name = std::thread::current().name().unwrap_or("").to_owned();
    tx.send(name).unwrap();
}

#[tokio::test]
async fn connections_are_spread_round_robin_over_the_workers_threads() {
    let workers = Workers::start(NonZeroUsize::new(3).unwrap()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut set = JoinSet::new();
    for _ in 0..9 {
        workers.spawn_in(&mut set, thread_name(tx.clone()));
    }
    while let Some(joined) = set.join_next().await {
        joined.unwrap();
    }
    let mut per_thread = BTreeMap::new();
    for _ in 0..9 {
        *per_thread.entry(rx.recv().await.unwrap()).or_insert(0) += 1;
    }
    let expected: BTreeMap<String, i32> = (0..3).map(|i| (format!("nsqgate-w{i}"), 3)).collect();
    assert_eq!(per_thread, expected);
}

#[tokio::test]
async fn a_task_keeps_its_worker_across_awaits() {
    let workers = Workers::start(NonZeroUsize::new(2).unwrap()).unwrap();
    let mut set = JoinSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    workers.spawn_in(&mut set, async move {
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(std::thread::current().id());
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        tx.send(seen).unwrap();
    });
    set.join_next().await.unwrap().unwrap();
    let seen = rx.recv().await.unwrap();
    assert!(seen.iter().all(|id| *id == seen[0]), "{seen:?}");
}

#[tokio::test]
async fn dropping_the_workers_ends_their_tasks() {
    let workers = Workers::start(NonZeroUsize::MIN).unwrap();
    let mut set = JoinSet::new();
    workers.spawn_in(&mut set, std::future::pending());
    drop(workers);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), set.join_next())
        .await
        .expect("the worker's runtime stopped")
        .expect("a task");
    assert!(ended.unwrap_err().is_cancelled());
}
