use std::time::Instant;

use super::*;

const RATE: Rate = Rate {
    per_sec: 1000,
    burst: 1000,
};

#[test]
fn a_lease_is_spent_locally_until_short_and_lapses_after_its_ttl() {
    let start = Instant::now();
    let mut lease = Lease::new(start);
    assert!(!lease.spend(1, start), "nothing leased yet");
    lease.granted(10, 1, start);
    for _ in 0..9 {
        assert!(lease.spend(1, start));
    }
    assert!(!lease.spend(1, start), "all ten spent");
    lease.granted(10, 1, start);
    assert!(!lease.spend(1, start + TTL), "lapsed");
}

/// A quota far above every rate here: its cap (a tenth of it) never binds.
const LARGE: Rate = Rate {
    per_sec: 10_000_000,
    burst: 10_000_000,
};

/// A lease that saw `takes` takes of `amount` tokens over its first second.
fn with_history(takes: u32, amount: u64) -> Lease {
    let start = Instant::now();
    let mut lease = Lease::new(start);
    let step = TTL / takes;
    for i in 0..takes {
        lease.granted(amount, amount, start + step * i);
    }
    lease.granted(amount, amount, start + TTL);
    lease
}

#[test]
fn the_lease_size_follows_the_recent_rate_within_its_cap() {
    let start = Instant::now();
    let lease = Lease::new(start);
    assert_eq!(
        lease.wanted(1, RATE, 3),
        1,
        "no history: just what is needed"
    );
    // 500 tokens over 1 s: 50 per 100 ms, 250 per half a TTL: the floor, since 1024 takes
    // would not be spent before the lease lapses.
    let lease = with_history(500, 1);
    assert_eq!(lease.wanted(1, LARGE, 3), 250);
    // 50,000 a second: 5,000 per 100 ms, more than the floor of 1,024 takes.
    assert_eq!(with_history(50_000, 1).wanted(1, LARGE, 3), 5_000);
    // 5,000 takes of 1 a second: the floor of 1,024 takes is more than 100 ms of them.
    assert_eq!(with_history(5_000, 1).wanted(1, LARGE, 3), 1_024);
    // A byte budget: 2,000 takes of 100 bytes a second, so 20,000 bytes per 100 ms, and the
    // floor (1,024 takes of 100) capped at half a second of spending, 100,000 bytes.
    assert_eq!(with_history(2_000, 100).wanted(100, LARGE, 3), 100_000);
    assert_eq!(
        lease.wanted(1, RATE, 3),
        100,
        "capped at a tenth of the quota"
    );
    // The cap: a tenth of the per-second rate, and the replica's share of the burst.
    assert_eq!(Lease::most(RATE, 3), 100);
    let small_burst = Rate {
        per_sec: 1000,
        burst: 30,
    };
    assert_eq!(Lease::most(small_burst, 3), 10);
    assert_eq!(
        lease.wanted(200, small_burst, 3),
        200,
        "never less than needed"
    );
    assert_eq!(
        Lease::most(
            Rate {
                per_sec: 5,
                burst: 1
            },
            3
        ),
        1
    );
}
