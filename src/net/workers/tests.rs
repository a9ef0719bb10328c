#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::num::NonZeroUsize;

use super::*;

/// The name of the thread a task runs on.
async fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

#[tokio::test]
async fn a_task_runs_on_the_worker_it_is_spawned_on() {
    let workers = Workers::start(NonZeroUsize::new(3).unwrap()).unwrap();
    let mut names = Vec::new();
    for index in 0..6 {
        names.push(workers.spawn_on(index, thread_name()).await.unwrap());
    }
    let expected: Vec<String> = (0..6).map(|i| format!("nsqgate-w{}", i % 3)).collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn a_task_keeps_its_worker_across_awaits() {
    let workers = Workers::start(NonZeroUsize::new(2).unwrap()).unwrap();
    let seen = workers
        .spawn_on(1, async move {
            let mut seen = Vec::new();
            for _ in 0..20 {
                seen.push(std::thread::current().id());
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            seen
        })
        .await
        .unwrap();
    assert!(seen.iter().all(|id| *id == seen[0]), "{seen:?}");
}

#[tokio::test]
async fn dropping_the_workers_ends_their_tasks() {
    let workers = Workers::start(NonZeroUsize::MIN).unwrap();
    let task = workers.spawn_on(0, std::future::pending::<()>());
    drop(workers);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the worker's runtime stopped");
    assert!(ended.unwrap_err().is_cancelled());
}
