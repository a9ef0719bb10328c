use std::time::{Duration, Instant};

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

#[test]
fn the_lease_size_follows_the_recent_rate_within_its_cap() {
    let start = Instant::now();
    let mut lease = Lease::new(start);
    assert_eq!(
        lease.wanted(1, RATE, 3),
        1,
        "no history: just what is needed"
    );
    // 500 tokens over 1 s: 50 per 100 ms.
    for i in 0..500u32 {
        lease.granted(1, 1, start + Duration::from_millis(u64::from(i) * 2));
    }
    lease.granted(1, 1, start + TTL);
    assert_eq!(lease.wanted(1, RATE, 3), 50);
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
