//! No leak from hostile input (issue 13): a table of hostile cases, one from each family the
//! suite covers, run for hundreds of connections; nsqgate's open descriptors (its client and
//! nsqd connections, from /proc/PID/fd) come back exactly to where they were, its RSS
//! (/proc/PID/status VmRSS) grows by less than a few MiB, and nothing reaches nsqd.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod hostile_support;

use std::time::{Duration, Instant};

use hostile_support::{
    case, cut, error, mpub_body, setup, with_body, Case, Outcome, Start, NSQD_MAX_MSG_SIZE,
};

/// Rounds of the table after the warm-up round, each over `PARALLEL` connections at once.
const ROUNDS: usize = 10;
/// Table runs at once in each round (the `join!` below).
const PARALLEL: usize = 4;
/// RSS growth allowed over all rounds: allocator caches and fragmentation, not per-connection
/// state (a leak of a 4 KiB buffer per connection would be ~3 MiB here).
const RSS_GROWTH_LIMIT_KIB: u64 = 3 * 1024;

fn cases() -> Vec<Case> {
    let long = {
        let mut line = b"PUB ".to_vec();
        line.resize(64 * 1024, b'a');
        line.push(b'\n');
        line
    };
    let too_big = NSQD_MAX_MSG_SIZE as i32 + 1;
    let identify = |body: &[u8]| with_body(b"IDENTIFY\n", body.len() as i32, body);
    vec![
        case("bad magic", Start::Bare, *b"  V1", error("E_BAD_PROTOCOL")),
        cut(
            "TLS record cut short",
            Start::Bare,
            [0x16, 3, 1, 0],
            Outcome::Close,
        ),
        case(
            "PUB before IDENTIFY",
            Start::Magic,
            with_body(b"PUB pre\n", 1, b"x"),
            error(
                "E_INVALID TLS is required: cannot PUB; send IDENTIFY with tls_v1 and \
                 feature_negotiation (or connect with TLS)",
            ),
        ),
        case(
            "IDENTIFY not JSON",
            Start::Magic,
            identify(b"hello"),
            error("E_BAD_BODY IDENTIFY failed to decode JSON body"),
        ),
        cut(
            "IDENTIFY cut short",
            Start::Magic,
            with_body(b"IDENTIFY\n", 100, b"{"),
            Outcome::Close,
        ),
        case(
            "a second IDENTIFY",
            Start::Upgraded,
            with_body(b"IDENTIFY\n", 2, b"{}"),
            error("E_INVALID cannot IDENTIFY again"),
        ),
        case(
            "unknown command",
            Start::Upgraded,
            *b"FOO\n",
            error("E_INVALID invalid command FOO"),
        ),
        case("64 KiB line", Start::Upgraded, long, Outcome::Close),
        case(
            "bad topic",
            Start::Upgraded,
            with_body(b"PUB a*b\n", 1, b"x"),
            error(r#"E_BAD_TOPIC PUB topic name "a*b" is not valid"#),
        ),
        case(
            "PUB over the limit",
            Start::Upgraded,
            with_body(b"PUB big\n", too_big, b"x"),
            error(format!(
                "E_BAD_MESSAGE PUB message too big {too_big} > {NSQD_MAX_MSG_SIZE}"
            )),
        ),
        cut(
            "PUB cut short",
            Start::Upgraded,
            with_body(b"PUB cut\n", 100, b"part"),
            Outcome::Close,
        ),
        cut(
            "MPUB count disagrees",
            Start::Upgraded,
            with_body(b"MPUB m\n", 14, &mpub_body(3, &[b"a", b"b"])),
            error("E_BAD_MESSAGE MPUB failed to read message(2) body size"),
        ),
        case(
            "DPUB defer out of range",
            Start::Upgraded,
            with_body(b"DPUB d -1\n", 1, b"x"),
            error("E_INVALID DPUB could not parse timeout -1"),
        ),
        case(
            "CLS again",
            Start::Closing,
            *b"CLS\n",
            error("E_INVALID cannot CLS in current state"),
        ),
    ]
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Waits (bounded) until nsqgate holds `expected` descriptors; the count it settled on.
fn settled_descriptors(pid: u32, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = descriptors(pid);
        if now == expected || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_hostile_connections_leave_no_descriptor_and_little_memory_behind() {
    let setup = setup();
    let pid = setup.gate.pid();
    let cases = cases();
    // The warm-up: whatever nsqgate builds once (the nsqd leg's pool, caches, allocator
    // arenas) is built before the measure.
    setup.run(&cases).await;
    setup.assert_nothing_published();
    let before = descriptors(pid);
    let rss_before = rss_kib(pid);
    for _ in 0..ROUNDS {
        tokio::join!(
            setup.run(&cases),
            setup.run(&cases),
            setup.run(&cases),
            setup.run(&cases)
        );
    }
    let connections = cases.len() * ROUNDS * PARALLEL;
    let after = settled_descriptors(pid, before);
    let rss_after = rss_kib(pid);
    println!(
        "{connections} hostile connections: descriptors {before} -> {after}, \
         RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert_eq!(after, before, "descriptors left open");
    assert!(
        rss_after.saturating_sub(rss_before) < RSS_GROWTH_LIMIT_KIB,
        "RSS grew {rss_before} -> {rss_after} KiB over {connections} connections"
    );
    setup.assert_nothing_published();
}
